"""Full-integer (int8) post-training quantization of a backbone for LiteRT.

``python -m extract --precision int8`` (the default on CPU for the
EfficientNet-Lite backbones) runs the CNN with int8 weights and activations:
about twice float32's frames/s on CPU, a model a third the size, and
features within cosine ~0.99 of float32's (BENCHMARKS.md, section 6). The
features that reach the records stay float32; only the CNN's arithmetic
changes.

The recipe (each choice measured on the 34 real clips of ../shared/videos,
features of held-out frames compared with float32's):

- ``tf.lite.Optimize.DEFAULT`` with a representative dataset and
  ``TFLITE_BUILTINS_INT8``: int8 weights (per channel) and activations,
  uint8 frames in, float32 features out, the float preprocessing folded into
  the quantized graph.
- The stem convolution and the first depthwise convolution stay in float32
  (TensorFlow's selective quantization, ``QuantizationDebugger`` with
  ``denylisted_nodes``): TensorFlow's quantization debugger showed their
  outputs with 2.6-2.9 quantization steps of RMS error against < 0.6 for
  every other layer; keeping them in float raised the 5th percentile of the
  per-frame cosine to float32 from 0.956 to 0.974 (median 0.985 -> 0.990)
  for 4 % of the int8 speed.
- Calibration frames are made here, procedurally (smooth colour fields,
  discs, stripes, noise), not taken from the videos being extracted. With
  ReLU6 everywhere most activation ranges are [0, 6] whatever the input, and
  the measured fidelity did not depend on where the frames came from:
  median / 5th-percentile cosine 0.990 / 0.976 calibrating on 200 frames of
  *other* real clips (in-domain), 0.991 / 0.977 on frames of the synthetic
  demo videos, 0.990 / 0.974 on photos, 0.990 / 0.975 on these procedural
  frames (0.990 / 0.976 with 200 of them; 100 are used). So the quantized
  model depends only on the backbone, its weights and the software that
  converts it: it is made once per machine and cached, an extraction's start
  does not wait for a calibration pass over its videos, and no sample of a
  user's videos (test videos included) shapes the model.

The converter is deterministic (the same inputs gave the same bytes in every
trial), but its output may differ between TensorFlow versions or machines.
So an int8 extraction stores the exact model it used in its output folder
(``backbone.tflite``, with its SHA-256 in the manifest); resumed runs, Ray
workers and ``python -m predict`` (through the training run) use those bytes.
"""

import warnings

import numpy as np

CALIBRATION_FRAMES = 100
_CALIBRATION_SEED = 20261202
# What identifies the calibration (recorded in the manifest and part of the
# cached model's key, with NumPy's version, which draws the frames). Change
# the recipe's number whenever ``calibration_frames`` changes.
CALIBRATION = {"source": "procedural", "recipe": 1, "seed": _CALIBRATION_SEED, "frames": CALIBRATION_FRAMES}


def calibration_frames(size, count=CALIBRATION_FRAMES):
    """The representative frames, made from a fixed seed.

    Returns:
      uint8 ``[count, size, size, 3]``: smooth colour fields (a 4 x 4 grid of
      random colours, bilinearly interpolated), one to three flat discs,
      stripes of random angle, frequency and contrast, and a little noise.
    """
    rng = np.random.Generator(np.random.PCG64(_CALIBRATION_SEED))
    y, x = np.mgrid[0:size, 0:size] / size
    cell_y, cell_x = np.minimum((y * 3).astype(int), 2), np.minimum((x * 3).astype(int), 2)
    weight_y, weight_x = (y * 3 - cell_y)[..., None], (x * 3 - cell_x)[..., None]
    frames = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        grid = rng.random((4, 4, 3)) * 255
        image = (grid[cell_y, cell_x] * (1 - weight_y) * (1 - weight_x)
                 + grid[cell_y + 1, cell_x] * weight_y * (1 - weight_x)
                 + grid[cell_y, cell_x + 1] * (1 - weight_y) * weight_x
                 + grid[cell_y + 1, cell_x + 1] * weight_y * weight_x)
        for _ in range(rng.integers(1, 4)):
            centre_y, centre_x, radius = rng.random(3) * [1, 1, 0.3]
            image[(y - centre_y) ** 2 + (x - centre_x) ** 2 < radius ** 2] = rng.random(3) * 255
        angle, frequency, contrast = rng.random() * np.pi, 2 + rng.random() * 30, rng.random() * 40
        image += contrast * np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)))[..., None]
        image += rng.normal(0, 6, image.shape)
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def _first_layers_kept_in_float(calibrated_model):
    """Output tensor names of the first convolution and the first depthwise
    convolution of a calibrated (not yet quantized) LiteRT model."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=calibrated_model)
    names = {tensor["index"]: tensor["name"] for tensor in interpreter.get_tensor_details()}
    operations = interpreter._get_ops_details()  # the only way to walk a model's graph in LiteRT's Python API
    kept = []
    for kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        first = next((op for op in operations if op["op_name"] == kind), None)
        if first is not None:
            kept.append(names[first["outputs"][0]])
    return kept


def quantize(function, image_size, first_layers_in_float=True, per_channel=True):
    """Converts a traced backbone to an int8 LiteRT model (see the module docstring).

    Args:
      function: the backbone's traced ``tf.function`` (uint8 frames -> features).
      image_size: side of its input frames.
      first_layers_in_float, per_channel: the recipe's choices; the other
        values are there for ``bench.precision``'s comparison of variants.

    Returns:
      The ``.tflite`` model (bytes).
    """
    import tensorflow as tf

    from common import console

    frames = calibration_frames(image_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([frames[i:i + 1]] for i in range(len(frames)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_disable_per_channel = not per_channel  # the converter's only switch for it
    with warnings.catch_warnings(), console.stderr_shown_on_failure():
        # The converter warns that the uint8 input has no statistics (it needs
        # none: its range is its type's) and the debugger that TensorFlow's
        # own interpreter is deprecated.
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter)
        if first_layers_in_float:
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=_first_layers_kept_in_float(debugger.calibrated_model))
        return debugger.get_nondebug_quantized_model()

