"""The baseline beside every run: a linear classifier on pooled features.

The first question about a sequence model is whether it beats averaging its
inputs. So every run also fits the classic answer, on the same videos: each
video's mean and standard deviation of its real frames' features,
standardized over the training videos, into a multinomial logistic
regression with an L2 penalty. Like the run itself, the validation split
chooses (the penalty, by validation loss); the classifier is then fitted
again on every training video (validation included) and scored once on the
test split, for the report. Fitted in NumPy by L-BFGS in seconds (688 JHMDB
clips: about 2 s on 2 cores).

``python -m bench.accuracy`` fits the same baseline with scikit-learn's
``LogisticRegression`` (C by grouped 3-fold CV) on its cross-validation
folds.
"""

import dataclasses

import numpy as np

# L2 penalties tried, on the mean cross-entropy scale: ``0.5 * l2 * |W|^2``
# is added to the mean loss (scikit-learn's C on n videos is 1 / (l2 * n):
# C 0.01-1 on JHMDB's ~550 training videos is 0.002-0.2).
PENALTIES = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
# Without a validation split to choose, the one in the middle.
DEFAULT_PENALTY = 0.01
NAME = "mean+std logistic regression"


@dataclasses.dataclass
class Pooled:
    """Each video's pooled features ``[N, 2D]`` (mean, then std) and label ``[N]``."""

    features: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)


def pool(dataset):
    """The ``Pooled`` videos of one pass over ``dataset`` (batches of
    ``(inputs, labels[, details])``), over each video's real frames."""
    rows, labels = [], []
    for batch in dataset:
        inputs, batch_labels = batch[0], batch[1]
        features, counts = inputs["features"].numpy(), inputs["num_frames"].numpy()
        for video, count in zip(features, counts):
            real = video[:max(int(count), 1)].astype(np.float64)
            rows.append(np.concatenate([real.mean(0), real.std(0)]))
        labels.append(batch_labels.numpy())
    if not rows:
        return Pooled(np.zeros((0, 0)), np.zeros(0, np.int64))
    return Pooled(np.array(rows), np.concatenate(labels).astype(np.int64))


class Standardizer:
    """``(x - mean) / std`` with the training videos' statistics (a constant
    dimension is left at 0 rather than blown up)."""

    def __init__(self, features):
        self.mean = features.mean(0)
        self.std = np.where(features.std(0) > 1e-8, features.std(0), 1.0)

    def __call__(self, features):
        return (features - self.mean) / self.std


def _softmax_loss(weights, bias, features, labels, penalty):
    """Mean cross-entropy plus ``0.5 * penalty * |weights|^2``, its gradient,
    and the probabilities."""
    logits = features @ weights + bias
    logits -= logits.max(1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(1, keepdims=True)
    count = len(labels)
    loss = -np.log(probabilities[np.arange(count), labels] + 1e-300).mean() + 0.5 * penalty * np.sum(weights ** 2)
    error = probabilities.copy()
    error[np.arange(count), labels] -= 1.0
    error /= count
    return loss, features.T @ error + penalty * weights, error.sum(0)


def fit(features, labels, num_classes, penalty, start=None, iterations=500, memory=10):
    """Weights ``[D, K]`` and bias ``[K]`` of the L2-penalized multinomial
    logistic regression, by L-BFGS (``memory`` past steps, a backtracking
    line search), from ``start`` (a previous fit's ``(weights, bias)``) or zeros.
    The problem is strictly convex, so any start reaches the same optimum."""
    dim = features.shape[1]
    shapes = ((dim, num_classes), (num_classes,))

    def unpack(flat):
        return flat[:dim * num_classes].reshape(shapes[0]), flat[dim * num_classes:]

    def value_and_gradient(flat):
        loss, weights_gradient, bias_gradient = _softmax_loss(*unpack(flat), features, labels, penalty)
        return loss, np.concatenate([weights_gradient.ravel(), bias_gradient])

    flat = np.zeros(dim * num_classes + num_classes) if start is None else np.concatenate(
        [start[0].ravel(), start[1]])
    loss, gradient = value_and_gradient(flat)
    steps, changes = [], []
    for _ in range(iterations):
        if np.abs(gradient).max() < 1e-6:
            break
        # Two-loop recursion: the direction from the last ``memory`` steps.
        direction = -gradient
        alphas = []
        for step, change in reversed(list(zip(steps, changes))):
            alpha = step @ direction / (change @ step)
            alphas.append(alpha)
            direction = direction - alpha * change
        if steps:
            direction *= (steps[-1] @ changes[-1]) / (changes[-1] @ changes[-1])
        for (step, change), alpha in zip(zip(steps, changes), reversed(alphas)):
            beta = change @ direction / (change @ step)
            direction = direction + (alpha - beta) * step
        slope = gradient @ direction
        if slope >= 0:  # not a descent direction: start the memory afresh
            steps, changes, direction, slope = [], [], -gradient, -gradient @ gradient
        size = 1.0 if steps else 1.0 / max(1.0, np.abs(gradient).max())
        while True:
            new_loss, new_gradient = value_and_gradient(flat + size * direction)
            if new_loss <= loss + 1e-4 * size * slope or size < 1e-12:
                break
            size *= 0.5
        step, change = size * direction, new_gradient - gradient
        if change @ step > 1e-12:
            steps, changes = (steps + [step])[-memory:], (changes + [change])[-memory:]
        flat, loss, gradient = flat + step, new_loss, new_gradient
    return unpack(flat)


def _scores(model, pooled, num_classes):
    weights, bias = model
    logits = pooled.features @ weights + bias
    logits -= logits.max(1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return {"top1": float(np.mean(logits.argmax(1) == pooled.labels)),
            "loss": float(-log_probabilities[np.arange(len(pooled)), pooled.labels].mean())}


def run_baseline(train, validation, test, num_classes):
    """Fits the baseline and scores it.

    Args:
      train: the ``Pooled`` training videos (the validation split's left out).
      validation: the ``Pooled`` validation videos (may be empty).
      test: the ``Pooled`` test videos (may be empty).
      num_classes: the number of classes.

    Returns:
      ``{"name", "penalty", "chosen_on", "videos", "test": {"top1", "loss"} or
      None}``: the penalty chosen, what chose it, the videos it was finally
      fitted on.
    """
    standardize = Standardizer(np.concatenate([train.features, validation.features]) if len(validation)
                               else train.features)
    train_x, validation_x = standardize(train.features), standardize(validation.features) if len(validation) else None
    if len(validation):
        fitted, losses = None, {}
        for penalty in PENALTIES:  # the strongest first: each fit starts from the one before
            fitted = fit(train_x, train.labels, num_classes, penalty, start=fitted)
            losses[penalty] = _scores(fitted, Pooled(validation_x, validation.labels), num_classes)["loss"]
        penalty = min(losses, key=losses.get)
        chosen_on = "chosen on the validation split's loss"
        everything = Pooled(np.concatenate([train_x, validation_x]), np.concatenate([train.labels,
                                                                                      validation.labels]))
    else:
        penalty, chosen_on, everything = DEFAULT_PENALTY, "the default: no validation split to choose", Pooled(
            train_x, train.labels)
    model = fit(everything.features, everything.labels, num_classes, penalty)
    scores = _scores(model, Pooled(standardize(test.features), test.labels), num_classes) if len(test) else None
    return {"name": NAME, "penalty": penalty, "chosen_on": chosen_on, "videos": len(everything), "test": scores}
