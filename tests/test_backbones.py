"""Backbones: the legacy checkpoint reader, ImageNet wiring, local weight files."""

import numpy as np
import pytest

from common import cache
from extract import backbones, efficientnet_lite, torch_legacy


def test_legacy_checkpoint_is_read_without_torch():
    state = torch_legacy.load_state_dict(efficientnet_lite.pytorch_checkpoint_path())
    parameters = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert 4_690_000 <= parameters <= 4_700_000
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert not any("_se_" in key for key in state)  # Lite: no squeeze-excite
    assert state["_blocks.15._project_conv.weight"].dtype == np.float32


def test_legacy_reader_rejects_other_files(tmp_path):
    checkpoint = open(efficientnet_lite.pytorch_checkpoint_path(), "rb").read()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint[: len(checkpoint) // 2])
    with pytest.raises(ValueError, match="truncated"):
        torch_legacy.load_state_dict(truncated)
    zipped = tmp_path / "zip.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ValueError, match="zip-format"):
        torch_legacy.load_state_dict(zipped)


def _center_square(image, size):
    """Resizes the short side to ``size`` and centre-crops, like the video path."""
    import tensorflow as tf

    height, width = image.shape[:2]
    scale = size / min(height, width)
    resized = tf.image.resize(image, (round(height * scale), round(width * scale)), antialias=True)
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return np.clip(resized[top:top + size, left:left + size].numpy(), 0, 255).astype(np.uint8)


def imagenet_photos_recognized(weights, name="efficientnet_lite0"):
    """True if an EfficientNet-Lite model with ``weights`` labels scikit-image's
    cat as a cat (281-285) and its coffee as espresso, cup or coffee mug."""
    from skimage import data

    model = efficientnet_lite.build_model(name, include_top=True)
    if weights is not None:
        model.load_weights(weights)
    size = efficientnet_lite.VARIANTS[name].image_size
    images = np.stack([_center_square(data.chelsea(), size), _center_square(data.coffee(), size)])
    top1 = np.argmax(model(efficientnet_lite.preprocess(images.astype(np.float32))).numpy(), axis=1)
    return 281 <= top1[0] <= 285 and top1[1] in (967, 968, 504)


@pytest.mark.parametrize("name", list(efficientnet_lite.VARIANTS))
def test_converted_imagenet_weights_recognize_photos(name):
    """Lite1 and Lite2 are Lite0 widened and deepened: their checkpoints fit
    the scaled architecture exactly (every weight used, every shape right),
    and their features mean what they should."""
    assert imagenet_photos_recognized(efficientnet_lite.imagenet_weights_path(name), name)


def test_random_weights_fail_the_same_check():
    assert not imagenet_photos_recognized(None)


def test_converted_weights_are_cached(monkeypatch):
    path = efficientnet_lite.imagenet_weights_path()
    assert path.exists()
    # A second call must not convert again: make conversion impossible.
    monkeypatch.setattr(efficientnet_lite, "pytorch_checkpoint_path", lambda: "/nonexistent.pth")
    assert efficientnet_lite.imagenet_weights_path() == path


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_keras_application_loads_local_weights_file(tmp_path, name):
    spec = backbones.get_spec(name)
    source = spec.build(None)
    rng = np.random.default_rng(0)
    source.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in source.get_weights()])
    path = tmp_path / f"{name}.weights.h5"
    source.save_weights(path)

    loaded = backbones.Backbone(name, str(path))
    frames = rng.integers(0, 256, (2, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    expected = source(spec.preprocess(frames.astype(np.float32)), training=False).numpy()
    np.testing.assert_allclose(loaded(frames), expected, rtol=1e-4, atol=1e-4)
    assert loaded(frames).shape == (2, spec.feature_dim)
    assert backbones.describe_weights(str(path))["weights_sha256"]


def test_every_registered_image_cnn_builds_with_declared_shapes():
    for name, spec in backbones.BACKBONES.items():
        if spec.streaming:  # a published model, checked in tests/test_movinet.py
            continue
        model = spec.build(None)
        assert model.output_shape == (None, spec.feature_dim), name
        assert model.input_shape[1:3] == (spec.image_size, spec.image_size), name


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.get_spec("vgg99")
    with pytest.raises(ValueError, match="existing weights file"):
        backbones.Backbone("mobilenet_v2", "/no/such/weights.h5")
    with pytest.raises(ValueError, match="unknown engine"):
        backbones.Backbone("mobilenet_v2", "none", engine="onnx")


def test_litert_engine_computes_tensorflows_features(lite0):
    import tensorflow as tf
    from skimage import data

    # "auto" picks LiteRT on a machine without a GPU.
    assert lite0.engine == ("tensorflow" if tf.config.list_physical_devices("GPU") else "litert")
    litert = lite0 if lite0.engine == "litert" else backbones.Backbone("efficientnet_lite0", engine="litert",
                                                                        precision="float32")
    reference = backbones.Backbone("efficientnet_lite0", engine="tensorflow")
    photos = np.stack([_center_square(data.chelsea(), 224), _center_square(data.coffee(), 224)])
    noise = np.random.default_rng(2).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    frames = np.concatenate([photos, noise])
    expected = reference(frames)
    features = litert(frames)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    # Another batch size re-plans LiteRT's buffers; the earlier result is the
    # caller's own array and stays intact.
    np.testing.assert_allclose(litert(frames[:1]), expected[:1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_efficientnet_lite0_takes_a_local_weights_file(lite0):
    from_file = backbones.Backbone("efficientnet_lite0", str(efficientnet_lite.imagenet_weights_path()),
                                   precision="float32")
    frames = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(from_file(frames), lite0(frames), rtol=1e-5, atol=1e-5)
    random = backbones.Backbone("efficientnet_lite0", "none", precision="float32")
    assert not np.allclose(random(frames), lite0(frames), atol=1e-2)


def test_litert_conversion_is_cached_and_reused(lite0, monkeypatch):
    """Issue 9, start-up: a later process loads the cached conversion instead
    of building and converting the model again (the lite0 fixture converted it)."""
    path = backbones.converted_model_path(backbones.get_spec("efficientnet_lite0"), "imagenet")
    assert path.exists() and path.parent.parent == cache.cache_dir()
    before = path.stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built again")

    monkeypatch.setattr(backbones, "traced_function", no_build)
    cached = backbones.Backbone("efficientnet_lite0", "imagenet", engine="litert", threads=1, precision="float32")
    frames = np.random.default_rng(4).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(cached(frames), lite0(frames), rtol=1e-5, atol=1e-5)
    assert path.stat().st_mtime_ns == before
    # Another model (other weights) has another cache entry.
    assert backbones.converted_model_path(backbones.get_spec("efficientnet_lite0"), "none") != path


def test_random_weights_are_the_same_in_every_process():
    """--weights none draws its weights with a fixed seed, so that the
    workers of a distributed run (and predict) compute the same features."""
    frames = np.random.default_rng(5).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    first = backbones.Backbone("mobilenet_v2", "none", engine="tensorflow")(frames)
    second = backbones.Backbone("mobilenet_v2", "none", engine="tensorflow")(frames)
    np.testing.assert_array_equal(first, second)


def test_mixed_precision_features_stay_close_to_float32():
    """Issue 9, GPU: the TensorFlow engine's mixed precision (the default on a
    GPU) keeps features within the documented tolerance of float32."""
    from skimage import data

    reference = backbones.Backbone("efficientnet_lite0", engine="tensorflow", precision="float32")
    mixed = backbones.Backbone("efficientnet_lite0", engine="tensorflow", precision="mixed")
    assert (reference.precision, mixed.precision) == ("float32", "mixed")
    photos = np.stack([_center_square(data.chelsea(), 224), _center_square(data.coffee(), 224)])
    noise = np.random.default_rng(6).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    frames = np.concatenate([photos, noise])
    expected, features = reference(frames), mixed(frames)
    assert features.dtype == np.float32
    assert np.abs(features - expected).max() <= backbones.MIXED_PRECISION_TOLERANCE * np.abs(expected).max()
    assert np.abs(features - expected).max() > 0  # it did compute in float16
