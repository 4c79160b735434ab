"""Video-level evaluation: accuracy, per-class precision and recall, confusion matrix."""

import io

import numpy as np


def inference_function(model):
    """``model`` in inference mode as one ``tf.function`` (traced once, reused
    by every evaluation)."""
    import tensorflow as tf

    return tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)


def top_k_for(num_classes):
    """The k of the top-k accuracy reported beside top-1: 5, or less so that
    it stays below the number of classes (top-k is always 1 when k reaches
    it); None with fewer than 3 classes."""
    k = min(5, num_classes - 1)
    return k if k >= 2 else None


class NonFiniteOutputs(ValueError):
    """Some videos have NaN or Inf features (which may or may not turn the
    model's outputs into NaN: tanh(Inf) is 1), or NaN or Inf outputs."""

    def __init__(self, video_ids):
        super().__init__(f"NaN or Inf in the features or outputs of {len(video_ids)} held-out videos "
                         f"({', '.join(video_ids[:3])})")
        self.video_ids = video_ids


def predict_logits(predict, dataset):
    """Runs ``predict`` (from ``inference_function``) over one pass of ``dataset``
    (made ``with_video_ids``).

    Returns:
      ``(logits [N, C], labels [N], video_ids [N])`` as numpy arrays.

    Raises:
      NonFiniteOutputs: some features or logits are NaN or Inf.
    """
    logits, labels, video_ids, finite = [], [], [], []
    for inputs, label, ids in dataset:
        logits.append(predict(inputs).numpy())
        labels.append(label.numpy())
        video_ids.append(ids.numpy())
        finite.append(np.isfinite(inputs["features"].numpy()).all(axis=(1, 2)))
    if not logits:
        raise ValueError("the evaluation data holds no examples")
    logits, labels, video_ids = np.concatenate(logits), np.concatenate(labels), np.concatenate(video_ids)
    finite = np.concatenate(finite) & np.isfinite(logits).all(axis=1)
    if not finite.all():
        raise NonFiniteOutputs([v.decode("utf-8") for v in video_ids[~finite]])
    return logits, labels, video_ids


def evaluate(predict, dataset, class_names):
    """``metrics_from_logits`` over one pass of ``dataset`` through ``predict``."""
    logits, labels, _ = predict_logits(predict, dataset)
    return metrics_from_logits(logits, labels, class_names)


def metrics_from_logits(logits, labels, class_names):
    """Computes evaluation metrics.

    Args:
      logits: ``[N, C]`` class scores.
      labels: ``[N]`` true class indices.
      class_names: the C class names.

    Returns:
      A JSON-serializable dict: ``examples``, ``loss`` (mean cross-entropy),
      ``top1``, ``k`` and ``top_k`` (top-k accuracy with ``k = top_k_for(C)``;
      both None with fewer than 3 classes), ``per_class`` (name -> precision,
      recall, support) and ``confusion_matrix`` (rows: true class, columns:
      predicted).
    """
    num_classes = len(class_names)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probabilities[np.arange(len(labels)), labels].mean()
    ranked = np.argsort(-logits, axis=1)
    predicted = ranked[:, 0]
    k = top_k_for(num_classes)
    top_k = float((ranked[:, :k] == labels[:, None]).any(axis=1).mean()) if k else None
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        predicted_as_i, truly_i = confusion[:, i].sum(), confusion[i].sum()
        per_class[name] = {
            "precision": float(confusion[i, i] / predicted_as_i) if predicted_as_i else None,
            "recall": float(confusion[i, i] / truly_i) if truly_i else None,
            "support": int(truly_i),
        }
    return {
        "examples": int(len(labels)),
        "loss": float(loss),
        "top1": float((predicted == labels).mean()),
        "k": k,
        "top_k": top_k,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def confusion_matrix_png(confusion, class_names, title):
    """Renders a confusion matrix (rows normalized to recall) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    confusion = np.asarray(confusion, np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    normalized = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    size = min(4 + 0.35 * len(class_names), 30)
    figure, axes = plt.subplots(figsize=(size, size), dpi=80)
    axes.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=90, fontsize=8)
    axes.set_yticks(ticks, class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(class_names) <= 20:
        for (i, j), count in np.ndenumerate(confusion):
            if count:
                axes.text(j, i, int(count), ha="center", va="center", fontsize=8,
                          color="white" if normalized[i, j] > 0.5 else "black")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
