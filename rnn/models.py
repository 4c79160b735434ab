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
      bidirectional: also read each video backwards.
    """

    cell: str = "gru"
    layers: int = 2
    units: int = 256
    dropout: float = 0.0
    bidirectional: bool = False

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"unknown --cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        check_number("layers", self.layers, minimum=1)
        check_number("units", self.units, minimum=1)
        check_number("dropout", self.dropout, minimum=0, below=1)


CELLS = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}


@keras.saving.register_keras_serializable(package="rnn")
class FrameMask(keras.layers.Layer):
    """``[B, T]`` mask: True for each video's real frames, False for padding."""

    def call(self, features, num_frames):
        steps = keras.ops.arange(keras.ops.shape(features)[1], dtype="int32")
        return keras.ops.expand_dims(steps, 0) < keras.ops.expand_dims(keras.ops.cast(num_frames, "int32"), 1)

    def compute_output_spec(self, features, num_frames):
        return keras.KerasTensor(features.shape[:2], dtype="bool")


def build_model(config, num_classes, feature_dim, max_frames=None):
    """Builds the classifier.

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

    x = features
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
    # float32 logits even under mixed precision: softmax and the loss want the range.
    logits = keras.layers.Dense(num_classes, name="classifier", dtype="float32")(x)
    return keras.Model({"features": features, "num_frames": num_frames}, logits, name=f"{config.cell}_classifier")
