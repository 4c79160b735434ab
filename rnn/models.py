"""Recurrent video classifiers over per-frame features, looked up by cell name.

Videos are right-padded to a fixed length. The mask built from
``num_frames`` makes every recurrent layer skip the padding, and the last
layer returns its state at each video's *true* last frame, not at the last
padded step (the classic bug: for a short video that step is zeros or stale).
Right padding plus a mask, tanh/sigmoid activations and no recurrent dropout
is also what lets Keras use the fused cuDNN kernels on a GPU.
"""

import keras

from rnn.configs import CELL_NAMES, ModelConfig  # noqa: F401  (ModelConfig: what build_model takes)


CELLS = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}
assert tuple(CELLS) == CELL_NAMES


@keras.saving.register_keras_serializable(package="rnn")
class FrameMask(keras.layers.Layer):
    """``[B, T]`` mask: True for each video's real frames, False for padding."""

    def call(self, features, num_frames):
        steps = keras.ops.arange(keras.ops.shape(features)[1], dtype="int32")
        return keras.ops.expand_dims(steps, 0) < keras.ops.expand_dims(keras.ops.cast(num_frames, "int32"), 1)

    def compute_output_spec(self, features, num_frames):
        return keras.KerasTensor(features.shape[:2], dtype="bool")


@keras.saving.register_keras_serializable(package="rnn")
class Standardize(keras.layers.Layer):
    """``(features - mean) / std`` per feature dimension, with the mean and
    standard deviation of the training videos' real frames (``adapt``). They
    are weights of the model, so the checkpoints and the exported model
    carry them, and ``predict`` standardizes as training did."""

    def build(self, input_shape):
        dim = input_shape[-1]
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(dim,), initializer="ones", trainable=False, name="std")

    def adapt(self, mean, std):
        """Sets the statistics (``training_statistics``)."""
        self.mean.assign(mean)
        self.std.assign(std)

    def call(self, features):
        return (features - self.mean) / self.std


@keras.saving.register_keras_serializable(package="rnn")
class MaskedMeanStd(keras.layers.Layer):
    """``[B, 2D]``: each video's mean and standard deviation over its real frames."""

    def call(self, features, mask):
        weights = keras.ops.expand_dims(keras.ops.cast(mask, features.dtype), -1)
        count = keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)
        mean = keras.ops.sum(features * weights, axis=1) / count
        variance = keras.ops.sum(keras.ops.square(features - keras.ops.expand_dims(mean, 1)) * weights, axis=1) / count
        return keras.ops.concatenate([mean, keras.ops.sqrt(variance + 1e-6)], axis=-1)

    def compute_output_spec(self, features, mask):
        return keras.KerasTensor((features.shape[0], 2 * features.shape[-1]), dtype=features.dtype)


@keras.saving.register_keras_serializable(package="rnn")
class LastFrame(keras.layers.Layer):
    """``[B, D]``: each video's features at its true last frame (``num_frames
    - 1``), never a padded step."""

    def call(self, features, num_frames):
        last = keras.ops.maximum(keras.ops.cast(num_frames, "int32") - 1, 0)
        return keras.ops.take_along_axis(features, keras.ops.reshape(last, (-1, 1, 1)), axis=1)[:, 0]

    def compute_output_spec(self, features, num_frames):
        return keras.KerasTensor((features.shape[0], features.shape[-1]), dtype=features.dtype)


def training_statistics(batches, most_batches=100):
    """What the ``Standardize`` layers need, from the training videos of up
    to ``most_batches`` batches of ``(inputs, labels)`` (a sample is enough
    for statistics and bounds the time on large datasets): the mean and
    standard deviation of every feature dimension over the real frames (not
    the padding), and over the videos those of each video's mean and
    standard deviation of its standardized frames (what ``pooled`` feeds the
    classifier).

    Returns:
      ``{"frames": (mean, std), "videos": (mean, std)}``: float32 arrays
      ``[D]`` and ``[2D]``; each std at least ``STD_FLOOR`` times the root
      mean square std of its dimensions, so that a dimension (nearly)
      constant in training is not blown up on a new video: CNN features
      have many such dimensions on narrow data (more than half of the
      demo's, none of JHMDB's), and an unfloored one turned a demo test
      video's 0.02 into 10^4.
    """
    import numpy as np

    video_means, video_stds, frames = [], [], []
    for batch, (inputs, _) in enumerate(batches):
        if batch == most_batches:
            break
        features, num_frames = inputs["features"].numpy().astype(np.float64), inputs["num_frames"].numpy()
        for video, count in zip(features, num_frames):
            real = video[:max(int(count), 1)]
            video_means.append(real.mean(0))
            video_stds.append(real.std(0))
            frames.append(len(real))
    weights = np.array(frames, np.float64)[:, None]
    video_means, video_stds = np.array(video_means), np.array(video_stds)
    # Over all frames: the frame-weighted mean, and the total variance (within plus between videos).
    mean = (weights * video_means).sum(0) / weights.sum()
    variance = (weights * (video_stds ** 2 + (video_means - mean) ** 2)).sum(0) / weights.sum()
    std = _floored(np.sqrt(variance))
    # Standardizing the frames is affine: a video's mean maps to (mean - m) / s, its std to std / s.
    pooled = np.concatenate([(video_means - mean) / std, video_stds / std], axis=1)
    return {"frames": (mean.astype(np.float32), std.astype(np.float32)),
            "videos": (pooled.mean(0).astype(np.float32), _floored(pooled.std(0)).astype(np.float32))}


STD_FLOOR = 0.1


def _floored(std):
    import numpy as np

    return np.maximum(std, max(STD_FLOOR * float(np.sqrt(np.mean(std ** 2))), 1e-6))


def build_model(config, num_classes, feature_dim, max_frames=None):
    """Builds the classifier.

    Frames are standardized (``Standardize``: set the statistics of the
    training videos with ``adapt_to`` before training), optionally dropped
    out, then read by the stacked recurrent layers; the classifier sees the
    last layer's state at each video's true last frame and, with
    ``pooled``, the video's mean and standard deviation of its standardized
    frames, themselves standardized over the training videos: the mean+std
    pooling baseline, with the recurrent state beside it.

    Args:
      config: a ``ModelConfig``.
      num_classes: number of classes.
      feature_dim: size of a frame's feature vector.
      max_frames: padded length, or None to accept any length.

    Returns:
      A ``keras.Model`` taking ``{"features": [B, T, D], "num_frames": [B]}``
      and returning class logits ``[B, num_classes]``.
    """
    features = keras.Input((max_frames, feature_dim), name="features")
    num_frames = keras.Input((), dtype="int32", name="num_frames")
    mask = FrameMask(name="frame_mask")(features, num_frames)

    standardized = Standardize(name="standardize")(features)
    x = standardized
    if config.input_dropout:
        x = keras.layers.Dropout(config.input_dropout, name="input_dropout")(x)
    cell = CELLS[config.cell]
    for i in range(config.layers):
        last = i == config.layers - 1
        # The last layer returns one vector per video: with the mask, its
        # state after the video's last real frame.
        layer = cell(config.units, return_sequences=not last, name=f"{config.cell}_{i}")
        if config.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        x = layer(x, mask=mask)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    if config.pooled:
        pooled = MaskedMeanStd(name="mean_std")(standardized, mask)
        pooled = Standardize(name="standardize_mean_std")(pooled)
        x = keras.layers.Concatenate(name="state_and_mean_std")([x, pooled])
    if config.last_frame:
        x = keras.layers.Concatenate(name="with_last_frame")([x, LastFrame(name="last_frame")(standardized,
                                                                                              num_frames)])
    # float32 logits even under mixed precision: softmax and the loss want the range.
    penalty = keras.regularizers.L2(config.classifier_l2) if config.classifier_l2 else None
    logits = keras.layers.Dense(num_classes, kernel_regularizer=penalty, name="classifier", dtype="float32")(x)
    return keras.Model({"features": features, "num_frames": num_frames}, logits, name=f"{config.cell}_classifier")


def adapt_to(model, statistics):
    """Gives ``model``'s ``Standardize`` layers their statistics
    (``training_statistics``)."""
    model.get_layer("standardize").adapt(*statistics["frames"])
    if any(layer.name == "standardize_mean_std" for layer in model.layers):
        model.get_layer("standardize_mean_std").adapt(*statistics["videos"])
