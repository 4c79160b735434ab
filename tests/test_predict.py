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
    # Issue 35 item 5: which model labels, and what it reads of each video.
    assert lines[0].startswith(f"model: {run / 'model.keras'} (") and "step" in lines[0]
    assert lines[1] == ("each video read as the run's training videos were: its first 10 s at 5 frames/s (50 frames "
                        "at most), efficientnet_lite0 features")
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
                        "--eval_pattern", features / "test-*.tfrecord", "--json")
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
    assert "-clip.avi" in result.stdout.splitlines()


def test_predict_needs_a_trained_run(tmp_path):
    result = run_cli("predict", "--run", tmp_path / "no_such_run", "x.mp4")
    assert result.returncode == 1 and "no_such_run is missing, not a run folder" in result.stderr
    (tmp_path / "video.mp4").write_bytes(b"x")
    result = run_cli("predict", "--run", tmp_path, tmp_path / "video.mp4")  # a folder, but not a run
    assert result.returncode == 1 and "no run.json" in result.stderr


def test_predict_refuses_a_changed_weights_file_and_never_prints_nan(tmp_path):
    """Issue 34 item 6: features made from a weights file are labelled only
    with that file's bytes (the manifest's SHA-256); an output that is not
    finite is no prediction."""
    import keras

    from conftest import LITE0, make_two_class_clips
    from extract import efficientnet_lite

    weights = tmp_path / "lite0.weights.h5"
    weights.write_bytes(open(efficientnet_lite.imagenet_weights_path(), "rb").read())
    videos = make_two_class_clips(tmp_path / "videos", per_class=3)
    features = tmp_path / "features"
    result = run_cli("extract", *LITE0, "--weights", weights, "--precision", "float32", "--videos", videos,
                     "--output_dir", features, "--test_fraction", 0, "--progress=false")
    assert result.returncode == 0, result.stderr
    result = run_cli("train", "--steps", 3, "--logdir", tmp_path / "runs", "--train_pattern",
                     features / "train-*.tfrecord", "--eval_pattern", "", "--validation_fraction", 0)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "gru"
    clip = next(videos.glob("bars/*"))
    assert run_cli("predict", "--run", run, clip).returncode == 0

    # The same architecture, other weights: every label could flip without a sign.
    model = efficientnet_lite.build_model("efficientnet_lite0", include_top=True)
    model.load_weights(weights)
    kernel = model.get_layer("conv_stem").kernel
    kernel.assign(kernel.numpy()[..., ::-1])
    model.save_weights(weights)
    result = run_cli("predict", "--run", run, clip)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: the weights file {weights} changed since the run's features were made "
                                    "from it (SHA-256"), result.stderr
    assert "0." not in result.stdout  # no probability printed

    # A model whose output is not finite gives no label (it printed "nan" probabilities).
    weights.write_bytes(open(efficientnet_lite.imagenet_weights_path(), "rb").read())
    predictor = Predictor(run)
    predictor.model = lambda inputs: keras.ops.full((1, 2), float("nan"))
    import pytest

    with pytest.raises(ValueError, match="the model's output is not finite"):
        predictor(clip)
