"""Video-level evaluation: accuracy, per-class precision and recall, confusion matrix."""

import dataclasses

import numpy as np

from common.console import a_few


def inference_function(model):
    """``model`` in inference mode as one ``tf.function`` (traced once, reused
    by every evaluation), returning ``{"logits", "state"}``: the class scores,
    and each video's final recurrent state (what the classifier layer reads,
    for the embeddings projector)."""
    import keras
    import tensorflow as tf

    classifier = model.layers[-1]
    with_state = keras.Model(model.inputs, {"logits": model.outputs[0], "state": classifier.input})
    return tf.function(lambda inputs: with_state(inputs, training=False), reduce_retracing=True)


def describe_scores(results):
    """"top-1 0.875, top-3 1.000, loss 0.412" (top-k only where it means
    something; the loss with 3 significant digits, which a loss near 0 needs)."""
    text = f"top-1 {results['top1']:.3f}"
    if results.get("k"):
        text += f", top-{results['k']} {results['top_k']:.3f}"
    return text + f", loss {results['loss']:.3g}"


def top_k_for(num_classes):
    """The k of the top-k accuracy reported beside top-1: 5, or less so that
    it stays below the number of classes (top-k is always 1 when k reaches
    it); None with fewer than 3 classes."""
    k = min(5, num_classes - 1)
    return k if k >= 2 else None


def charted_ks(num_classes):
    """The ks of the top-k accuracies charted in TensorBoard: the reported
    one (``top_k_for``) and each of 3 and 5 below the number of classes.
    Runs on different numbers of classes then share their top-3 column in
    HParams (a run that lacks a tag leaves its cell blank there): a 4-class
    run charts top-3, a 29-class run top-3 and top-5."""
    ks = {k for k in (3, 5) if k < num_classes} | {top_k_for(num_classes)}
    return sorted(k for k in ks if k)


class NonFiniteOutputs(ValueError):
    """Some videos have NaN or Inf features (which may or may not turn the
    model's outputs into NaN: tanh(Inf) is 1), or NaN or Inf outputs."""

    def __init__(self, video_ids):
        super().__init__(f"NaN or Inf in the features or outputs of {len(video_ids)} held-out videos "
                         f"({a_few(video_ids)})")
        self.video_ids = video_ids


@dataclasses.dataclass
class Outputs:
    """The model's outputs on one pass over held-out data, video by video.

    Attributes:
      logits: ``[N, C]`` class scores.
      labels: ``[N]`` true classes.
      video_ids: the N video ids.
      thumbnails: the N JPEG thumbnails (None where the shards have none).
      states: ``[N, U]`` final recurrent states.
      mean_features: ``[N, D]`` each video's CNN features averaged over its real frames.
    """

    logits: np.ndarray
    labels: np.ndarray
    video_ids: list
    thumbnails: list
    states: np.ndarray
    mean_features: np.ndarray

    @property
    def predictions(self):
        return self.logits.argmax(axis=1)


def run_model(predict, dataset):
    """Runs ``predict`` (from ``inference_function``) over one pass of
    ``dataset`` (made ``with_details``).

    Returns:
      ``Outputs``.

    Raises:
      NonFiniteOutputs: some features or logits are NaN or Inf.
    """
    parts = {key: [] for key in ("logits", "labels", "video_ids", "thumbnails", "states", "mean_features",
                                 "finite")}
    for inputs, labels, details in dataset:
        outputs = predict(inputs)
        features = inputs["features"].numpy()
        num_frames = inputs["num_frames"].numpy()
        parts["logits"].append(outputs["logits"].numpy().astype(np.float32))
        parts["states"].append(outputs["state"].numpy().astype(np.float32))
        parts["labels"].append(labels.numpy())
        parts["video_ids"] += [v.decode("utf-8") for v in details["video_id"].numpy()]
        parts["thumbnails"] += [t or None for t in details["thumbnail"].numpy()]
        parts["mean_features"].append(features.sum(axis=1) / np.maximum(num_frames, 1)[:, None])
        parts["finite"].append(np.isfinite(features).all(axis=(1, 2)))
    if not parts["logits"]:
        raise ValueError("the evaluation data holds no examples")
    result = Outputs(np.concatenate(parts["logits"]), np.concatenate(parts["labels"]), parts["video_ids"],
                     parts["thumbnails"], np.concatenate(parts["states"]), np.concatenate(parts["mean_features"]))
    finite = np.concatenate(parts["finite"]) & np.isfinite(result.logits).all(axis=1)
    if not finite.all():
        raise NonFiniteOutputs([video_id for video_id, ok in zip(result.video_ids, finite) if not ok])
    return result


def evaluate(predict, dataset, class_names):
    """Runs the model over ``dataset``; returns ``(metrics_from_logits(...), Outputs)``."""
    outputs = run_model(predict, dataset)
    return metrics_from_logits(outputs.logits, outputs.labels, class_names), outputs


def metrics_from_logits(logits, labels, class_names):
    """Computes evaluation metrics.

    Args:
      logits: ``[N, C]`` class scores.
      labels: ``[N]`` true class indices.
      class_names: the C class names.

    Returns:
      A JSON-serializable dict: ``examples``, ``loss`` (mean cross-entropy),
      ``top1``, ``k`` and ``top_k`` (top-k accuracy with ``k = top_k_for(C)``;
      both None with fewer than 3 classes), ``top_ks`` (``{"K": top-K}`` for
      each K of ``charted_ks(C)``), ``per_class`` (name -> precision,
      recall, support) and ``confusion_matrix`` (rows: true class, columns:
      predicted).
    """
    num_classes = len(class_names)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probabilities[np.arange(len(labels)), labels].mean()
    ranked = np.argsort(-logits, axis=1)
    predicted = ranked[:, 0]
    top_ks = {str(k): float((ranked[:, :k] == labels[:, None]).any(axis=1).mean())
              for k in charted_ks(num_classes)}
    k = top_k_for(num_classes)
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
        "top_k": top_ks[str(k)] if k else None,
        "top_ks": top_ks,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
