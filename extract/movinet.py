"""MoViNet-A0 stream, trained on Kinetics-600 (``--backbone movinet_a0_stream``).

A video CNN made for streaming: it reads **one frame per call** and carries
its state (causal convolution buffers, running pools) from each frame to the
next, so every frame's output already holds the motion of the frames
before it. That is the shape of this project's per-frame sequences; an
image CNN's features describe each frame alone.

The model is Google's published int8 TensorFlow Lite file (Kaggle Models
``google/movinet``, formerly TF Hub ``tensorflow/lite-model/movinet/a0/
stream/kinetics-600/classification/tflite/int8/1``; Apache-2.0), pinned by
its SHA-256: downloaded on first use into the weights cache, or given as a
file (``--weights FILE``). Its signature ``serving_default`` takes
``image`` (float32 ``[1, 1, 172, 172, 3]``, RGB in [0, 1]) and 43 state
tensors (zeros at a video's start) and returns ``logits`` and the next
states. The tensors a feature vector is read from are inside the graph;
``feature_model`` adds them to the outputs, so that LiteRT's XNNPACK
kernels keep running the whole graph (LiteRT's debug option that keeps
every tensor readable was 12 % slower here and warns at each start).

Each frame's stored vector is ``FEATURE_OUTPUTS``: what grouped
cross-validation on JHMDB chose (BENCHMARKS.md, section 11).
"""

import hashlib
import logging
import pathlib
import queue

import numpy as np

from common import cache, console, download

log = logging.getLogger(__name__)

NAME = "movinet_a0_stream"
PRETRAINED = "kinetics600"
IMAGE_SIZE = 172
PUBLISHED_MODEL = download.Artifact(
    file_name="movinet_a0_stream_kinetics600_int8.tflite",
    sha256="6125b36e2485eeb5cc1fd6206cf5e5d70235593fbc84610d1dce97fe3aa9c2ac",
    size=3276048,
    urls=(
        # The published address (TF Hub, now served by Kaggle Models).
        "https://tfhub.dev/tensorflow/lite-model/movinet/a0/stream/kinetics-600/classification/tflite/int8/1"
        "?lite-format=tflite",
        # The same file as committed by Google's TensorFlow Lite Flutter example (commit pinned).
        "https://raw.githubusercontent.com/tensorflow/flutter-tflite/7045e30722790910e5735b43d3f7e18a25008e6b/"
        "example/movinet/assets/movinet_int8.tflite",
    ))
SIGNATURE = "serving_default"
IMAGE_INPUT = "image"
LOGITS_OUTPUT = "logits"
# Tensors of the graph a frame's feature vector is read from: output name ->
# (the tensor's name in the published model, as its converter fused it; its size).
TENSORS = {
    # This frame's head features (after the causal blocks: they carry the
    # motion of the frames before), averaged over the 6 x 6 positions (int8).
    "frame_head": ("movinet_classifier/movinet/head/global_average_pool3d/truediv;"
                   "movinet_classifier/movinet/head/global_average_pool3d/Cast1", 480),
}
# What each frame's stored vector is, in order. Chosen by grouped 5-fold CV
# on JHMDB with train.py's GRU (BENCHMARKS.md section 11): this frame's head
# features scored 0.741; the classifier's 2048 running pre-logits
# ("movinet_classifier/classifier_head/head/conv2d/activation_32/Relu6;..."),
# which change little from frame to frame, 0.686; both 0.697.
FEATURE_OUTPUTS = ("frame_head",)
FEATURE_DIM = sum(TENSORS[name][1] for name in FEATURE_OUTPUTS)
# The Kinetics-600 classifier over the running mean of the head features:
# (its kernel's name, the end of its bias's name) for the hidden and the output layer.
_CLASSIFIER_LAYERS = (
    ("movinet_classifier/classifier_head/head/conv2d/conv2d/Conv2D", "classifier_head/head/conv2d/conv2d/bias"),
    ("movinet_classifier/classifier_head/classifier/conv2d/conv2d_1/Conv2D",
     "classifier_head/classifier/conv2d/conv2d_1/bias"),
)
LABELS_FILE = pathlib.Path(__file__).with_name("kinetics600_labels.txt")


class ModelUnavailable(ValueError):
    """The published model can be neither found nor downloaded."""


def cached_model_path():
    """Where the published model is kept once downloaded."""
    return cache.cache_dir() / "models" / PUBLISHED_MODEL.file_name


def published_model(weights=PRETRAINED, show_progress=True):
    """The model file's bytes: the published model (``weights`` ``kinetics600``:
    from the cache, downloaded on first use) or a local copy (a path).

    Raises:
      ModelUnavailable: offline without the file (the message gives both
        ways out), or a file that is not a MoViNet-A0 stream model.
    """
    if weights != PRETRAINED:
        content = pathlib.Path(weights).read_bytes()
        _check_signature(content, weights)
        if not PUBLISHED_MODEL.matches(content):
            log.warning("--weights %s is not the published MoViNet-A0 stream model (SHA-256 %s..., not %s...): "
                        "its features are its own", weights, hashlib.sha256(content).hexdigest()[:12],
                        PUBLISHED_MODEL.sha256[:12])
        return content
    path = cached_model_path()
    try:
        return download.fetch(PUBLISHED_MODEL, path, show_progress)
    except download.DownloadError as e:
        raise ModelUnavailable(
            f"cannot download {NAME}'s model ({e}); pass a copy of {PUBLISHED_MODEL.file_name} (SHA-256 "
            f"{PUBLISHED_MODEL.sha256[:12]}...) with --weights FILE, or put it at {path}") from None


def describe_weights(weights):
    """The manifest's record of the model file: ``kinetics600`` and the pinned
    SHA-256 for the published model, however it was obtained (download or a
    local copy of the same bytes), else the file's path and SHA-256."""
    if weights == PRETRAINED:
        return {"weights": PRETRAINED, "weights_sha256": PUBLISHED_MODEL.sha256}
    content = pathlib.Path(weights).read_bytes()
    if PUBLISHED_MODEL.matches(content):
        return {"weights": PRETRAINED, "weights_sha256": PUBLISHED_MODEL.sha256}
    return {"weights": str(pathlib.Path(weights).absolute()), "weights_sha256": hashlib.sha256(content).hexdigest()}


def _interpreter(content, threads=1):
    from ai_edge_litert.interpreter import Interpreter

    with console.tensorflow_startup_filtered():
        interpreter = Interpreter(model_content=content, num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


def _check_signature(content, source):
    """Refuses a file that does not take frames and states as MoViNet-A0 stream does."""
    try:
        interpreter = _interpreter(content)
    except (ValueError, RuntimeError) as e:
        raise ModelUnavailable(f"--weights {source} is not a TensorFlow Lite model "
                               f"({console.tensorflow_error_text(e)})") from None
    if SIGNATURE not in interpreter.get_signature_list():
        raise ModelUnavailable(f"--weights {source} is not a MoViNet-A0 stream model (it has no {SIGNATURE!r} "
                               "signature)")
    inputs = interpreter.get_signature_runner(SIGNATURE).get_input_details()
    image = inputs.get(IMAGE_INPUT)
    if image is None or list(image["shape"]) != [1, 1, IMAGE_SIZE, IMAGE_SIZE, 3] or len(inputs) < 2:
        raise ModelUnavailable(f"--weights {source} is not a MoViNet-A0 stream model (its {SIGNATURE!r} signature "
                               f"does not take one {IMAGE_SIZE}x{IMAGE_SIZE} frame and states)")
    missing = [name for name, (tensor, _) in TENSORS.items() if _tensor_index(interpreter, tensor) is None]
    if missing:
        raise ModelUnavailable(f"--weights {source} lacks the tensors the features are read from "
                               f"({', '.join(missing)}): not a MoViNet-A0 stream Kinetics model")


def _tensor_index(interpreter, name):
    return next((t["index"] for t in interpreter.get_tensor_details() if t["name"] == name), None)


def feature_model(content):
    """The model with ``FEATURE_OUTPUTS``' tensors added to its outputs (and
    to its signature, under those names). The same bytes for the same model:
    a stored copy is compared by SHA-256.

    Args:
      content: a MoViNet-A0 stream ``.tflite`` file's bytes.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    interpreter = _interpreter(content)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    graph = model.subgraphs[0]
    signature = next(s for s in model.signatureDefs if s.signatureKey.decode() == SIGNATURE)
    for name in FEATURE_OUTPUTS:
        index = _tensor_index(interpreter, TENSORS[name][0])
        graph.outputs = np.append(graph.outputs, index).astype(np.int32)
        output = schema.TensorMapT()
        output.name, output.tensorIndex = name.encode(), index
        signature.outputs.append(output)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


class _Stream:
    """One interpreter, reading one video at a time from a fresh state."""

    def __init__(self, content):
        self._runner = _interpreter(content).get_signature_runner(SIGNATURE)
        inputs = self._runner.get_input_details()
        self._start = {name: np.zeros(detail["shape"], detail["dtype"])
                       for name, detail in inputs.items() if name != IMAGE_INPUT}
        outputs = self._runner.get_output_details()
        self._scales = [outputs[name]["quantization"] for name in FEATURE_OUTPUTS]

    def features(self, frames):
        states = self._start  # a video's first frame sees zeros: nothing carries over from another video
        rows = np.empty((len(frames), FEATURE_DIM), np.float32)
        for t, frame in enumerate(frames):
            image = frame[np.newaxis, np.newaxis].astype(np.float32) / 255.0
            outputs = self._runner(**{IMAGE_INPUT: image}, **states)
            states = {name: outputs[name] for name in self._start}
            rows[t] = np.concatenate([_dequantized(outputs[name], scale).ravel()
                                      for name, scale in zip(FEATURE_OUTPUTS, self._scales)])
        return rows


def _dequantized(values, quantization):
    scale, zero_point = quantization
    if not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * np.float32(scale)


class StreamingModel:
    """MoViNet-A0 stream on LiteRT: features of whole videos, each read frame
    by frame in order from a fresh state, several videos at once.

    Each of ``streams`` interpreters runs on one CPU thread (two such
    interpreters ran 1.6x the frames/s of one interpreter on two threads:
    the model is small, and one frame per call leaves little to split); a
    video borrows one for its whole length, so no state is ever shared
    between videos.

    Args:
      content: the feature model (``feature_model``'s bytes).
      streams: interpreters, i.e. videos that can be read at once.
    """

    def __init__(self, content, streams):
        self.streams = streams
        self._idle = queue.Queue()
        for _ in range(streams):
            self._idle.put(_Stream(content))

    def __call__(self, frames):
        """Features ``[T, FEATURE_DIM]`` of one video's uint8 frames ``[T, 172, 172, 3]``, in order."""
        stream = self._idle.get()
        try:
            return stream.features(np.asarray(frames, np.uint8))
        finally:
            self._idle.put(stream)


def kinetics_labels():
    """The 600 Kinetics-600 class names in the model's output order."""
    return LABELS_FILE.read_text(encoding="utf-8").splitlines()


def kinetics_classifier(content):
    """The model's own Kinetics-600 classifier, as a function from a video's
    stored features ``[T, FEATURE_DIM]`` (its real frames) to logits
    ``[600]``: as the model does at the video's last frame, the mean of every
    frame's head features goes through its hidden layer (2048, ReLU6) and its
    output layer, with their weights dequantized."""
    interpreter = _interpreter(content)
    details = {t["name"]: t for t in interpreter.get_tensor_details()}
    layers = []
    for kernel_name, bias_name in _CLASSIFIER_LAYERS:
        kernel = _dequantized_constant(interpreter, details[kernel_name])
        bias = _dequantized_constant(interpreter, next(t for name, t in details.items() if name.endswith(bias_name)))
        layers.append((kernel.reshape(kernel.shape[0], -1), bias))
    (hidden, hidden_bias), (output, output_bias) = layers
    start = sum(TENSORS[name][1] for name in FEATURE_OUTPUTS[:FEATURE_OUTPUTS.index("frame_head")])

    def classify(frames):
        mean = frames[:, start:start + TENSORS["frame_head"][1]].mean(axis=0)
        return output @ np.clip(hidden @ mean + hidden_bias, 0.0, 6.0) + output_bias

    return classify


def _dequantized_constant(interpreter, detail):
    values = interpreter.get_tensor(detail["index"]).astype(np.float32)
    parameters = detail["quantization_parameters"]
    scales, zero_points = parameters["scales"], parameters["zero_points"]
    if not len(scales):
        return values
    axis = parameters["quantized_dimension"]
    shape = [1] * values.ndim
    shape[axis] = -1
    return (values - zero_points.reshape(shape)) * scales.reshape(shape)
