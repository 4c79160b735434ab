"""Recurrent video classifiers over per-frame features, looked up by cell name.

Videos are right-padded to a fixed length. The mask built from
``num_frames`` makes every recurrent layer skip the padding, and the last
layer returns its state at each video's *true* last frame, not at the last
padded step (the classic bug: for a short video that step is zeros or stale).
Right padding plus a mask, tanh/sigmoid activations and no recurrent dropout
is also what lets Keras use the fused cuDNN kernels on a GPU.
"""

import dataclasses

import keras

from common.console import check_number


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the classifier.

    Attributes:
      cell: ``"gru"`` or ``"lstm"``.
      layers: stacked recurrent layers.
      units: units per layer (per direction).
      dropout: dropout rate between layers and before the classifier
        (applied to layer outputs, so the cuDNN kernel is kept).
      input_dropout: dropout rate on the (standardized) frame features.
      pooled: also give the classifier each video's mean and standard
        deviation over its real frames, beside the recurrent state.
      bidirectional: also read each video backwards.
    """

    cell: str = "gru"
    layers: int = 2
    units: int = 256
    dropout: float = 0.0
    input_dropout: float = 0.0
    pooled: bool = False
    bidirectional: bool = False

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"unknown --cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        check_number("layers", self.layers, minimum=1)
        check_number("units", self.units, minimum=1)
        check_number("dropout", self.dropout, minimum=0, below=1)
        check_number("input_dropout", self.input_dropout, minimum=0, below=1)


CELLS = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}


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
        """Sets the statistics (``frame_statistics``)."""
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


def frame_statistics(batches, most_batches=100):
    """Mean and standard deviation of every feature dimension over the real
    frames (not the padding) of up to ``most_batches`` batches of
    ``(inputs, labels)`` (a sample is enough for statistics and bounds the
    time on large datasets).

    Returns:
      ``(mean, std)``, float32 arrays ``[D]`` (std at least 1e-3, so that a
      constant dimension is not blown up).
    """
    import numpy as np

    total = total_squares = None
    frames = 0
    for batch, (inputs, _) in enumerate(batches):
        if batch == most_batches:
            break
        features, num_frames = inputs["features"].numpy().astype(np.float64), inputs["num_frames"].numpy()
        real = np.arange(features.shape[1])[None, :] < num_frames[:, None]
        chosen = features[real]
        total = chosen.sum(0) if total is None else total + chosen.sum(0)
        total_squares = (chosen ** 2).sum(0) if total_squares is None else total_squares + (chosen ** 2).sum(0)
        frames += len(chosen)
    mean = total / frames
    std = np.sqrt(np.maximum(total_squares / frames - mean ** 2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def build_model(config, num_classes, feature_dim, max_frames=None):
    """Builds the classifier.

    Frames are standardized (``Standardize``: set its statistics with
    ``model.get_layer("standardize").adapt`` before training), optionally
    dropped out, then read by the stacked recurrent layers; the classifier
    sees the last layer's state at each video's true last frame (and, with
    ``pooled``, the video's mean and standard deviation of the standardized
    frames).

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

    frames = Standardize(name="standardize")(features)
    if config.input_dropout:
        frames = keras.layers.Dropout(config.input_dropout, name="input_dropout")(frames)
    x = frames
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
        pooled = MaskedMeanStd(name="mean_std")(frames, mask)
        if config.dropout:
            pooled = keras.layers.Dropout(config.dropout, name="mean_std_dropout")(pooled)
        x = keras.layers.Concatenate(name="state_and_mean_std")([x, pooled])
    # float32 logits even under mixed precision: softmax and the loss want the range.
    logits = keras.layers.Dense(num_classes, name="classifier", dtype="float32")(x)
    return keras.Model({"features": features, "num_frames": num_frames}, logits, name=f"{config.cell}_classifier")
