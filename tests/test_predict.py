"""The whole product as a user runs it: demo videos -> extract -> train.py ->
predict on held-out videos."""

import json
import sys

import numpy as np

from conftest import run as run_process, run_cli
from extract.video import decode_frames
from predict import Predictor
from records.inspect import inspect, iterate_videos


def test_train_cli_then_predict_labels_held_out_videos(demo_extraction, tmp_path):
    videos, features, extraction = demo_extraction
    assert extraction.returncode == 0, extraction.stderr
    result = run_cli("train", "--cell", "gru", "--units", 64, "--steps", 100, "--logdir", tmp_path,
                     "--train_pattern", features / "train-*.tfrecord", "--eval_pattern", features / "test-*.tfrecord")
    assert result.returncode == 0, result.stderr
    assert "test (8 videos, 4 classes): top-1" in result.stdout and "top-3" in result.stdout
    assert "top-5" not in result.stdout
    assert "cuInit" not in result.stderr and "cuda drivers" not in result.stderr  # Hardening 13
    run = tmp_path / "gru"
    assert json.loads((run / "metrics.json").read_text())["selected"]["test"]["top1"] >= 0.875

    held_out = sorted(inspect(features / "test-*.tfrecord", per_video=True)["videos"])
    result = run_cli("predict", "--run", run, *(videos / video_id for video_id in held_out))
    assert result.returncode == 0, result.stderr
    assert "(top 4 labels per video: the run knows 4 classes)" in result.stdout  # Hardening 15
    lines = result.stdout.splitlines()
    correct = 0
    for video_id in held_out:
        first_label = lines[lines.index(str(videos / video_id)) + 1].split()
        assert 0.0 <= float(first_label[0]) <= 1.0
        correct += first_label[1] == video_id.split("/")[0]
    assert correct / len(held_out) >= 0.875

    # Issue 14: predict computes features with the exact model of the
    # training features (the run keeps its own copy of the int8 model).
    manifest = json.loads((features / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    copy = (run / "backbone.tflite").read_bytes()
    assert copy == (features / "backbone.tflite").read_bytes()
    predictor = Predictor(run)
    video = next(iterate_videos(str(features / "test-*.tfrecord")))
    frames = decode_frames(videos / video["video_id"], manifest["fps"], manifest["seconds"], 224).frames
    np.testing.assert_array_equal(predictor.backbone(frames), video["features"][:video["num_frames"]])

    evaluated = run_cli("train", "--mode", "eval", "--logdir", tmp_path, "--run_name", "gru",
                        "--eval_pattern", features / "test-*.tfrecord")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["videos"] == len(held_out)


    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"")
    result = run_cli("predict", "--run", run, broken, videos / held_out[0])
    assert result.returncode == 1  # one video could not be read...
    assert "cannot be read: empty file" in result.stdout
    assert result.stdout.count("    ") >= 5  # ...the other was still labelled

    # Hardening 15: a video whose name starts with "-" goes after "--".
    dashed = tmp_path / "-clip.avi"
    dashed.write_bytes((videos / held_out[0]).read_bytes())
    result = run_process([sys.executable, "-m", "predict", "--run", run, "--", "-clip.avi"], cwd=tmp_path,
                         timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "-clip.avi"


def test_predict_needs_a_trained_run(tmp_path):
    result = run_cli("predict", "--run", tmp_path / "no_such_run", "x.mp4")
    assert result.returncode == 1 and "no_such_run is missing, not a run folder" in result.stderr
    (tmp_path / "video.mp4").write_bytes(b"x")
    result = run_cli("predict", "--run", tmp_path, tmp_path / "video.mp4")  # a folder, but not a run
    assert result.returncode == 1 and "no run.json" in result.stderr
