"""Shared fixtures: synthetic videos made with ffmpeg, the real clips folder,
and a private cache for converted weights."""

import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Converted weights go to a cache private to this test session, so that the
# conversion itself is exercised and the user's cache is never touched.
os.environ["VIDEO_FEATURES_CACHE"] = tempfile.mkdtemp(prefix="video_features_cache_")

from extract.video import ffmpeg_binary  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_VIDEOS = pathlib.Path(os.environ.get("SHARED_VIDEOS", REPO.parent / "shared" / "videos"))


def make_video(path, duration, size=(320, 240), rate=25, source="testsrc2", input_args=(), output_args=()):
    """Writes a synthetic video with an ffmpeg lavfi source; returns its path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    separator = ":" if "=" in source else "="
    command = [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", *input_args, "-f", "lavfi",
               "-i", f"{source}{separator}s={width}x{height}:r={rate}:d={duration}", *output_args, str(path)]
    subprocess.run(command, check=True)
    return path


def run_cli(*args, timeout=600):
    """Runs ``python -m <args>`` from the repository; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def assert_features_are_the_stored_models(output, videos):
    """Every video's stored features are exactly what the model stored in
    ``output`` computes on its frames, whatever batch its frames shared."""
    import hashlib
    import json

    import numpy as np

    from extract.backbones import Backbone
    from extract.video import decode_frames
    from records.inspect import iterate_videos

    manifest = json.loads((output / "manifest.json").read_text())
    model = (output / "backbone.tflite").read_bytes()
    assert hashlib.sha256(model).hexdigest() == manifest["model"]["sha256"]
    backbone = Backbone(manifest["backbone"], precision="int8", model=model)
    for video in iterate_videos(str(output / "*.tfrecord")):
        video_id, features = video["video_id"], video["features"][:video["num_frames"]]
        size = manifest["image_size"]
        frames = decode_frames(videos / video_id, manifest["fps"], manifest["seconds"], size).frames
        np.testing.assert_array_equal(backbone(frames), features, err_msg=video_id)


@pytest.fixture(scope="session")
def shared_videos():
    if not (SHARED_VIDEOS / "MANIFEST.tsv").exists():
        pytest.skip(f"real clips folder {SHARED_VIDEOS} is absent")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def lite0():
    """EfficientNet-Lite0 in float32 with its real ImageNet weights (converted once per session)."""
    from extract.backbones import Backbone

    return Backbone("efficientnet_lite0", "imagenet", precision="float32")


@pytest.fixture(scope="session")
def demo_extraction(tmp_path_factory):
    """``python -m extract --demo``, run once: (videos folder, output folder, CompletedProcess)."""
    root = tmp_path_factory.mktemp("demo")
    result = run_cli("extract", "--demo", "--videos", root / "videos", "--output_dir", root / "features",
                     "--progress=false")
    return root / "videos", root / "features", result
