"""The streaming video backbone (``movinet_a0_stream``): its download, its
streams, and an extraction with it as a user runs one.

The download code runs against a server on 127.0.0.1; everything that runs
the real model reads it from ``../shared/models`` (``SHARED_MODELS``) and
skips without it."""

import concurrent.futures
import dataclasses
import hashlib
import http.server
import json
import os
import shutil
import threading

import numpy as np
import pytest

from common import download
from conftest import MOVINET_MODEL, make_two_class_clips, run_cli
from extract import backbones, movinet
from extract.video import decode_frames


class _Server:
    """An HTTP server on 127.0.0.1 answering each path with the bytes given
    (404 elsewhere), and counting its requests."""

    def __init__(self, routes):
        self.routes, self.requests = routes, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self._httpd.server_port}{path}"

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture()
def server():
    content = os.urandom(200_000)
    served = _Server({"/model.tflite": content, "/other.tflite": os.urandom(200_000)})
    yield served, download.Artifact("model.tflite", hashlib.sha256(content).hexdigest(), len(content), ()), content
    served.close()


def test_download_keeps_the_pinned_bytes_and_fetches_once(server, tmp_path):
    served, artifact, content = server
    artifact = dataclasses.replace(artifact, urls=(served.url("/model.tflite"),))
    destination = tmp_path / "cache" / "model.tflite"
    assert download.fetch(artifact, destination, show_progress=False) == content
    assert destination.read_bytes() == content
    assert [p.name for p in destination.parent.iterdir()] == ["model.tflite"]  # no partial file left
    assert download.fetch(artifact, destination, show_progress=False) == content
    assert served.requests == ["/model.tflite"]  # the second time from the cache


def test_download_refuses_other_bytes_and_tries_the_next_address(server, tmp_path):
    served, artifact, content = server
    destination = tmp_path / "model.tflite"
    destination.write_bytes(b"a cut-off earlier download")
    artifact = dataclasses.replace(artifact, urls=(served.url("/other.tflite"), served.url("/missing"),
                                                   served.url("/model.tflite")))
    assert download.fetch(artifact, destination, show_progress=False) == content
    assert served.requests == ["/other.tflite", "/missing", "/model.tflite"]
    only_wrong = dataclasses.replace(artifact, urls=artifact.urls[:2])
    with pytest.raises(download.DownloadError) as error:
        download.fetch(only_wrong, tmp_path / "again.tflite", show_progress=False)
    assert "other.tflite: other bytes (200000 bytes, SHA-256" in str(error.value)
    assert "missing: Not Found" in str(error.value)
    assert not (tmp_path / "again.tflite").exists() and not list(tmp_path.glob(".*partial"))


def test_offline_without_the_model_says_both_ways_out(tmp_path, monkeypatch):
    unreachable = dataclasses.replace(movinet.PUBLISHED_MODEL, urls=("http://127.0.0.1:9/movinet.tflite",))
    monkeypatch.setattr(movinet, "PUBLISHED_MODEL", unreachable)
    monkeypatch.setenv("VIDEO_FEATURES_CACHE", str(tmp_path / "cache"))
    with pytest.raises(movinet.ModelUnavailable) as error:
        movinet.published_model()
    message = str(error.value)
    assert "cannot download movinet_a0_stream's model (http://127.0.0.1:9/movinet.tflite:" in message
    assert "--weights FILE" in message and str(tmp_path / "cache" / "models" / unreachable.file_name) in message


def test_weights_other_backbones_cannot_take_are_refused_before_any_work():
    with pytest.raises(ValueError, match="movinet_a0_stream takes 'kinetics600' or an existing weights file, not "
                                         "'none' \\(random weights"):
        backbones.check_weights(backbones.get_spec("movinet_a0_stream"), "none")
    with pytest.raises(ValueError, match="efficientnet_lite0 takes 'imagenet' or 'none'"):
        backbones.check_weights(backbones.get_spec("efficientnet_lite0"), "kinetics600")
    with pytest.raises(ValueError, match="published model is int8; --precision float32 is not offered"):
        backbones.resolve(backbones.get_spec("movinet_a0_stream"), "auto", "float32", on_gpu=False)
    assert backbones.resolve(backbones.get_spec("movinet_a0_stream"), "auto", "auto", on_gpu=True) == ("litert",
                                                                                                        "int8")


@pytest.fixture(scope="session")
def movinet_file():
    if not MOVINET_MODEL.is_file():
        pytest.skip(f"{MOVINET_MODEL} is absent")
    return MOVINET_MODEL


@pytest.fixture(scope="session")
def feature_model(movinet_file):
    return movinet.feature_model(movinet.published_model(str(movinet_file)))


def test_a_file_that_is_not_movinet_is_refused(tmp_path, movinet_file):
    from extract import backbones as backbones_lib

    lite0 = tmp_path / "lite0.tflite"
    lite0.write_bytes(backbones_lib.litert_model("efficientnet_lite0", "imagenet", "float32"))
    with pytest.raises(movinet.ModelUnavailable, match="not a MoViNet-A0 stream model"):
        movinet.published_model(str(lite0))
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\0" * 1000)
    with pytest.raises(movinet.ModelUnavailable, match="is not a TensorFlow Lite model"):
        movinet.published_model(str(garbage))
    # The same bytes as the published model, wherever they lie, are the published weights.
    assert movinet.describe_weights(str(movinet_file)) == movinet.describe_weights("kinetics600")


def test_feature_model_adds_the_outputs_and_is_reproducible(movinet_file, feature_model):
    from ai_edge_litert.interpreter import Interpreter

    assert movinet.feature_model(movinet_file.read_bytes()) == feature_model  # a stored copy compares by SHA-256
    outputs = Interpreter(model_content=feature_model).get_signature_runner().get_output_details()
    for name in movinet.FEATURE_OUTPUTS:
        assert list(outputs[name]["shape"])[-1] == movinet.TENSORS[name][1]
    assert "logits" in outputs and len(outputs) == 44 + len(movinet.FEATURE_OUTPUTS)


def _frames(seed, count=12):
    """Frames of a moving square: motion a video CNN sees."""
    frames = np.zeros((count, movinet.IMAGE_SIZE, movinet.IMAGE_SIZE, 3), np.uint8)
    frames[:] = np.random.default_rng(seed).integers(0, 256, 3, dtype=np.uint8)
    for t in range(count):
        frames[t, 40:80, 10 * t:10 * t + 40] = 255
    return frames


def test_each_video_starts_from_a_fresh_state_whatever_ran_before(feature_model):
    one = movinet.StreamingModel(feature_model, streams=1)
    first, second = _frames(0), _frames(1)
    alone = one(first)
    one(second)
    assert np.array_equal(one(first), alone)  # nothing carried over from the other video
    # State is carried from frame to frame: a frame's features depend on the frames before it.
    assert not np.array_equal(one(first[5:])[0], alone[5])
    # Several videos read at once, each by its own stream, give the same features as one by one.
    two = movinet.StreamingModel(feature_model, streams=2)
    videos = [_frames(seed) for seed in range(6)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(two, videos))
    for video, features in zip(videos, together):
        np.testing.assert_array_equal(features, one(video))


def test_a_video_backbone_reads_whole_videos_only(feature_model):
    backbone = backbones.Backbone("movinet_a0_stream", model=feature_model, threads=1)
    assert backbone.streaming and backbone.streams == 1
    with pytest.raises(TypeError, match="reads whole videos: call video_features"):
        backbone(_frames(0))
    assert backbone.video_features(_frames(0)).shape == (12, movinet.FEATURE_DIM)


def _copy_clips(source, destination, per_class):
    for class_name, count in per_class.items():
        (destination / class_name).mkdir(parents=True)
        for clip in sorted((source / class_name).glob("*.avi"))[:count]:
            shutil.copy(clip, destination / class_name / clip.name)
    return destination


def test_extraction_resume_and_the_kinetics_check(tmp_path, movinet_file):
    from conftest import JHMDB, assert_features_are_the_stored_models
    from records.inspect import iterate_videos

    if not JHMDB.is_dir():
        pytest.skip(f"{JHMDB} is absent")
    videos = _copy_clips(JHMDB, tmp_path / "videos", {"golf": 3, "pullup": 3, "shoot_bow": 2})
    output = tmp_path / "features"
    command = ("extract", "--videos", videos, "--output_dir", output, "--weights", movinet_file, "--fps", 10,
               "--seconds", 2, "--test_fraction", 0, "--videos_per_shard", 3, "--progress=false")
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    assert "loading movinet_a0_stream (int8)" in result.stderr and "8 written, 0 failed" in result.stdout
    manifest = json.loads((output / "manifest.json").read_text())
    assert (manifest["backbone"], manifest["weights"], manifest["weights_sha256"]) == (
        "movinet_a0_stream", "kinetics600", movinet.PUBLISHED_MODEL.sha256)
    assert manifest["feature_dim"] == movinet.FEATURE_DIM and manifest["image_size"] == 172
    assert manifest["model"]["outputs"] == list(movinet.FEATURE_OUTPUTS)
    # Every video's features are exactly what the stored model computes on its frames, read alone.
    assert_features_are_the_stored_models(output, videos)

    # A resume after a lost shard writes the same bytes again.
    before = {v["video_id"]: v["features"] for v in iterate_videos(str(output / "*.tfrecord"))}
    lost = sorted(output.glob("train-*.tfrecord"))[1]
    lost.unlink()
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    assert "1 shards written, 2 already done" in result.stdout
    for video in iterate_videos(str(output / "*.tfrecord")):
        np.testing.assert_array_equal(video["features"], before[video["video_id"]], err_msg=video["video_id"])

    # The model's own Kinetics-600 head reads the stored features right.
    result = run_cli("extract.kinetics_check", output / "*.tfrecord")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = {"golf": "golf driving", "pullup": "pull ups", "shoot_bow": "archery"}
    tops = {line: lines[i + 1].strip().split(" (")[0] for i, line in enumerate(lines) if "/" in line}
    right = sum(top == expected[video_id.split("/")[0]] for video_id, top in tops.items())
    assert len(tops) == 8 and right >= 7, result.stdout
    result = run_cli("extract.imagenet_check", output / "*.tfrecord")
    assert result.returncode == 1 and "not made by an EfficientNet-Lite model" in result.stderr


def test_the_cached_model_serves_an_offline_extraction_without_flags(tmp_path, movinet_file):
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    shutil.copy(movinet_file, cache / "models" / movinet.PUBLISHED_MODEL.file_name)
    videos = make_two_class_clips(tmp_path / "videos", per_class=2)
    output = tmp_path / "features"
    result = run_cli("extract", "--videos", videos, "--output_dir", output, "--progress=false",
                     env={**os.environ, "VIDEO_FEATURES_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["backbone"] == "movinet_a0_stream" and manifest["precision"] == "int8"

    # Without the cache and offline (no address answers here): one sentence, both ways out, nothing extracted.
    empty = tmp_path / "empty_cache"
    result = run_cli("extract", "--videos", videos, "--output_dir", tmp_path / "offline", "--progress=false",
                     env={**os.environ, "VIDEO_FEATURES_CACHE": str(empty)}, timeout=300)
    if "written" in result.stdout:
        pytest.skip("this machine reached the published model's address: the offline message cannot be tested")
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "cannot download movinet_a0_stream's model" in error[0]
    assert "--weights FILE" in error[0] and str(empty / "models") in error[0]
    assert not list((tmp_path / "offline").glob("*.tfrecord"))


def test_predict_computes_the_training_features_with_the_runs_model(tmp_path, movinet_file):
    """predict reads a raw clip as the extraction did: the same frames, the
    same model bytes (the run's copy), a fresh state: the same features."""
    from conftest import JHMDB
    from predict import Predictor
    from records.inspect import iterate_videos

    if not JHMDB.is_dir():
        pytest.skip(f"{JHMDB} is absent")
    videos = _copy_clips(JHMDB, tmp_path / "videos", {"golf": 2, "pullup": 2})
    features = tmp_path / "features"
    result = run_cli("extract", "--videos", videos, "--output_dir", features, "--weights", movinet_file,
                     "--fps", 10, "--seconds", 2, "--test_fraction", 0, "--progress=false")
    assert result.returncode == 0, result.stderr
    result = run_cli("train", "--steps", 5, "--logdir", tmp_path / "runs", "--train_pattern",
                     features / "train-*.tfrecord", "--eval_pattern", "", "--validation_fraction", 0)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "gru"
    assert (run / "backbone.tflite").read_bytes() == (features / "backbone.tflite").read_bytes()
    predictor = Predictor(run)
    for video in iterate_videos(str(features / "*.tfrecord")):
        frames = decode_frames(videos / video["video_id"], 10, 2, movinet.IMAGE_SIZE).frames
        np.testing.assert_array_equal(predictor.backbone.video_features(frames),
                                      video["features"][:video["num_frames"]], err_msg=video["video_id"])
    clip = videos / video["video_id"]
    result = run_cli("predict", "--run", run, clip)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[lines.index(str(clip)) + 1].split()[1] in ("golf", "pullup")
