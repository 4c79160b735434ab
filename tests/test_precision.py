"""--precision int8 (issue 14): the quantized model, where it lives, and the
rules that keep features of different precisions apart."""

import hashlib
import json

import numpy as np
import pytest

from conftest import LITE0, assert_features_are_the_stored_models, make_two_class_clips, run_cli
from extract import backbones, dataset, local_runner, plan, quantization
from records.inspect import iterate_videos


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two classes of three short clips each (one group per clip)."""
    return make_two_class_clips(tmp_path_factory.mktemp("clips"), 3)


def _extract(clips, output, *extra):
    return run_cli("extract", *LITE0, "--videos", clips, "--output_dir", output, "--videos_per_shard", 2,
                   "--progress=false", *extra)


def _features(output):
    return {video["video_id"]: video["features"][:video["num_frames"]]
            for video in iterate_videos(str(output / "*.tfrecord"))}


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_calibration_frames_are_made_here_the_same_every_time():
    frames = quantization.calibration_frames(64)
    assert frames.shape == (quantization.CALIBRATION_FRAMES, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, quantization.calibration_frames(64))
    assert frames.std() > 30 and len({frames[i].tobytes() for i in range(len(frames))}) == len(frames)


def test_auto_picks_the_fastest_correct_engine_and_precision():
    lite0, lite2, mobilenet = (backbones.get_spec(name) for name in
                               ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2"))
    assert backbones.resolve(lite0, "auto", "auto", on_gpu=False) == ("litert", "int8")
    assert backbones.resolve(lite2, "auto", "auto", on_gpu=False) == ("litert", "int8")
    assert backbones.resolve(mobilenet, "auto", "auto", on_gpu=False) == ("litert", "float32")
    assert backbones.resolve(lite0, "auto", "auto", on_gpu=True) == ("tensorflow", "mixed")
    assert backbones.resolve(lite0, "auto", "int8", on_gpu=True) == ("litert", "int8")
    assert backbones.resolve(lite0, "auto", "float32", on_gpu=False) == ("litert", "float32")
    assert backbones.resolve(lite0, "tensorflow", "auto", on_gpu=False) == ("tensorflow", "float32")
    with pytest.raises(ValueError, match="--precision int8 runs on --engine litert"):
        backbones.resolve(lite0, "tensorflow", "int8", on_gpu=False)
    with pytest.raises(ValueError, match="--precision mixed runs on --engine tensorflow"):
        backbones.resolve(lite0, "litert", "mixed", on_gpu=False)
    with pytest.raises(ValueError, match="not efficientnet_b0"):
        plan.ExtractConfig(backbone="efficientnet_b0", precision="int8")


def test_int8_model_is_deterministic_smaller_and_keeps_the_features(lite0):
    """The same conversion twice gives the same bytes (even after the process
    built other models, which renumbers Keras' unnamed layers); int8 features
    stay close to float32's and still show what is in the picture."""
    from skimage import data

    from test_backbones import _center_square

    spec = backbones.get_spec("efficientnet_lite0")
    cached = backbones.litert_model(spec.name, "imagenet", "int8")
    backbones.get_spec("mobilenet_v2").build(None)
    again = quantization.quantize(backbones.traced_function(spec, "imagenet"), spec.image_size)
    assert again == cached
    assert len(cached) < 0.4 * len(backbones.litert_model(spec.name, "imagenet", "float32"))

    photos = np.stack([_center_square(getattr(data, name)(), 224) for name in ("chelsea", "coffee", "astronaut")])
    reference = lite0(photos)
    quantized = backbones.Backbone(spec.name, precision="int8")(photos)
    cosine = (reference * quantized).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(quantized, axis=1)
    assert cosine.min() > 0.95, cosine
    assert not np.array_equal(reference, quantized)  # it did quantize
    from extract import efficientnet_lite

    head = efficientnet_lite.imagenet_classifier()
    np.testing.assert_array_equal(head(quantized).argmax(1), head(reference).argmax(1))


def test_int8_extraction_stores_its_model_and_refuses_another_precision(clips, tmp_path):
    output = tmp_path / "out"
    result = _extract(clips, output)  # no --precision: int8 on this CPU-only machine
    assert result.returncode == 0, result.stderr
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    assert manifest["model"]["sha256"] == _sha256(output / "backbone.tflite")
    assert manifest["model"]["calibration"] == quantization.CALIBRATION
    assert_features_are_the_stored_models(output, clips)

    refused = _extract(clips, output, "--precision", "float32")
    assert refused.returncode == 1
    assert "precision: 'int8' there, 'float32' now" in refused.stderr
    again = _extract(clips, output, "--precision", "int8")
    assert again.returncode == 0 and "nothing to do" in again.stdout

    restarted = _extract(clips, output, "--precision", "float32", "--overwrite")
    assert restarted.returncode == 0, restarted.stderr
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["precision"] == "float32" and "model" not in manifest
    assert not (output / "backbone.tflite").exists()  # the earlier extraction's own file


def _interrupt(output, shard):
    """What a run killed before ``shard`` was committed leaves behind."""
    (output / shard).unlink()
    (output / "index" / f"{shard}.json").unlink()
    manifest = json.loads((output / "manifest.json").read_text())
    manifest["complete"] = False
    (output / "manifest.json").write_text(json.dumps(manifest))


def test_a_float32_folder_resumes_in_float32_after_the_default_changed(clips, tmp_path):
    """An output folder made before int8 became the default (its manifest
    says precision "auto", as older versions wrote) resumes in float32 with
    the same command; asking for int8 there is refused."""
    output = tmp_path / "out"
    assert _extract(clips, output, "--precision", "float32").returncode == 0
    before = _features(output)
    manifest = json.loads((output / "manifest.json").read_text())
    manifest["precision"] = "auto"
    (output / "manifest.json").write_text(json.dumps(manifest))
    _interrupt(output, "train-00000-of-00002.tfrecord")

    result = _extract(clips, output)
    assert result.returncode == 0, result.stderr
    assert "1 shards written, 2 already done" in result.stdout
    assert "(float32)" in result.stderr
    assert json.loads((output / "manifest.json").read_text())["precision"] == "float32"
    after = _features(output)
    assert sorted(after) == sorted(before)
    for video_id, features in before.items():
        np.testing.assert_array_equal(after[video_id], features)
    refused = _extract(clips, output, "--precision", "int8")
    assert refused.returncode == 1 and "precision: 'float32' there, 'int8' now" in refused.stderr


def test_a_lost_model_is_restored_only_if_this_machine_makes_the_same_bytes(clips, tmp_path, monkeypatch):
    output = tmp_path / "out"
    assert _extract(clips, output).returncode == 0
    recorded = json.loads((output / "manifest.json").read_text())["model"]["sha256"]
    (output / "backbone.tflite").unlink()
    _interrupt(output, "test-00000-of-00001.tfrecord")
    result = _extract(clips, output)
    assert result.returncode == 0, result.stderr
    assert _sha256(output / "backbone.tflite") == recorded
    assert_features_are_the_stored_models(output, clips)

    # Another machine (another TensorFlow, say) that quantizes differently
    # must not add features unlike those already written.
    (output / "backbone.tflite").write_bytes(b"damaged")
    _interrupt(output, "test-00000-of-00001.tfrecord")
    monkeypatch.setattr(backbones, "litert_model", lambda *args: b"other bytes")
    videos = dataset.load_videos(clips)
    with pytest.raises(plan.ExtractionRefused,
                       match="backbone.tflite is damaged, and this machine makes efficientnet_lite0's int8 model into"):
        local_runner.extract(videos, output, plan.ExtractConfig(backbone=plan.DEMO_BACKBONE, videos_per_shard=2),
                             show_progress=False,
                             split_source={"test_fraction": 0.2})
    assert (output / "backbone.tflite").read_bytes() == b"damaged"


def test_training_refuses_held_out_features_of_another_precision(clips, tmp_path):
    from rnn import training

    int8, float32 = tmp_path / "int8", tmp_path / "float32"
    assert _extract(clips, int8).returncode == 0
    assert _extract(clips, float32, "--precision", "float32").returncode == 0
    config = training.TrainConfig(train_pattern=str(int8 / "train-*.tfrecord"),
                               eval_pattern=str(float32 / "test-*.tfrecord"), logdir=str(tmp_path / "runs"),
                               steps=2, show_progress=False)
    with pytest.raises(training.TrainingError, match="precision: 'int8' in the training data, 'float32' there"):
        training.train(config)
    assert not (tmp_path / "runs").exists()


# --precision auto on CPUs: int8 only where it pays on the CPU at hand (issue 22).

def _verdict_cache(tmp_path, speedup):
    """A cache folder like the session's (its LiteRT conversions), whose
    verdict for Lite0 says int8 runs ``speedup`` x float32 on this CPU."""
    import os
    import shutil

    from common import cache
    from extract import precision_choice

    folder = tmp_path / f"cache_{speedup}"
    shutil.copytree(cache.cache_dir() / "litert", folder / "litert")
    cpu, threads = precision_choice.cpu_description(), backbones.usable_cores()
    os.environ["VIDEO_FEATURES_CACHE"], session = str(folder), os.environ["VIDEO_FEATURES_CACHE"]
    try:
        precision_choice.remember(precision_choice.verdict_path("efficientnet_lite0", "imagenet", threads, cpu),
                                  "efficientnet_lite0", threads, cpu, speedup)
    finally:
        os.environ["VIDEO_FEATURES_CACHE"] = session
    return {**os.environ, "VIDEO_FEATURES_CACHE": str(folder)}


def test_auto_makes_float32_where_int8_is_not_faster_and_says_why(clips, tmp_path):
    slow_int8 = _verdict_cache(tmp_path, 1.01)
    output = tmp_path / "out"
    result = run_cli("extract", *LITE0, "--videos", clips, "--output_dir", output, "--progress=false", env=slow_int8)
    assert result.returncode == 0, result.stderr
    assert json.loads((output / "manifest.json").read_text())["precision"] == "float32"
    assert "--precision auto: float32: int8 is not faster on this CPU" in result.stderr
    assert "1.01x float32, below the 1.2x" in result.stderr
    assert not (output / "backbone.tflite").exists()

    # The folder keeps its precision on a CPU where int8 would pay...
    fast_int8 = _verdict_cache(tmp_path, 1.9)
    again = run_cli("extract", *LITE0, "--videos", clips, "--output_dir", output, "--progress=false", env=fast_int8)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert json.loads((output / "manifest.json").read_text())["precision"] == "float32"
    # ...where a new folder gets int8, and an explicit precision is obeyed.
    fast = run_cli("extract", *LITE0, "--videos", clips, "--output_dir", tmp_path / "fast", "--progress=false",
                   env=fast_int8)
    assert "--precision auto: int8: 1.90x float32 on this CPU" in fast.stderr
    assert json.loads((tmp_path / "fast" / "manifest.json").read_text())["precision"] == "int8"
    forced = run_cli("extract", *LITE0, "--videos", clips, "--output_dir", tmp_path / "forced", "--progress=false",
                     "--precision", "int8", env=slow_int8)
    assert forced.returncode == 0 and "--precision auto" not in forced.stderr
    assert json.loads((tmp_path / "forced" / "manifest.json").read_text())["precision"] == "int8"


def test_the_verdict_is_measured_once_per_cpu_and_settings(tmp_path, monkeypatch):
    from extract import precision_choice

    monkeypatch.setenv("VIDEO_FEATURES_CACHE", str(tmp_path))
    timings = []

    def measure(backbone, weights, threads):
        timings.append((backbone, threads))
        return 1.05 if threads == 2 else 1.6

    monkeypatch.setattr(precision_choice, "measure_int8_speedup", measure)
    first = precision_choice.int8_verdict("efficientnet_lite0", "imagenet", 2)
    assert (first.precision, first.int8_speedup) == ("float32", 1.05)
    assert precision_choice.int8_verdict("efficientnet_lite0", "imagenet", 2) == first
    assert precision_choice.int8_verdict("efficientnet_lite0", "imagenet", 1).precision == "int8"
    assert timings == [("efficientnet_lite0", 2), ("efficientnet_lite0", 1)]  # cached per key
    cached = json.loads(next((tmp_path / "precision").glob("efficientnet_lite0-*.json")).read_text())
    assert cached["cpu"] == precision_choice.cpu_description() and cached["threads"] in (1, 2)
    other_cpu = {"model": "Some CPU", "flags": ["avx2", "fma"]}
    assert precision_choice.verdict_path("efficientnet_lite0", "imagenet", 2, other_cpu) != \
        precision_choice.verdict_path("efficientnet_lite0", "imagenet", 2)
    assert precision_choice.describe_cpu(other_cpu) == "Some CPU (avx2 fma; no AVX-512)"
    # A verdict timed another way (an earlier version's fewer rounds) is timed again.
    path = precision_choice.verdict_path("efficientnet_lite0", "imagenet", 2)
    monkeypatch.setattr(precision_choice, "ROUNDS", 6)
    assert precision_choice.verdict_path("efficientnet_lite0", "imagenet", 2) != path


def test_the_real_timing_compares_both_models_on_this_cpu():
    from extract import precision_choice

    speedup = precision_choice.measure_int8_speedup("efficientnet_lite0", "imagenet", 2, rounds=2)
    assert 0.3 < speedup < 10  # a ratio of two real timings, whichever the CPU
