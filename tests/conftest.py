"""Shared fixtures: synthetic videos made with ffmpeg, the real clips folder,
a private cache for converted weights, and processes that end with their test.

Every process a test starts runs in its own process group and has a time
limit: on a failure or a timeout the whole group (ffmpeg, Ray and TensorFlow
children included) is killed, so that a slow machine gives a failing test
with a reason, never a hung suite."""

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Converted weights go to a cache private to this test session, so that the
# conversion itself is exercised and the user's cache is never touched.
os.environ["VIDEO_FEATURES_CACHE"] = tempfile.mkdtemp(prefix="video_features_cache_")

from extract.video import ffmpeg_binary  # noqa: E402


def _int8_pays_on_this_machine():
    """The tests of int8 extraction (``--precision auto`` on CPUs) must not
    depend on the CPU they run on: the session's cache says int8 pays here
    (tests/test_precision.py forces each verdict and times the real one)."""
    from extract import backbones, precision_choice

    cpu = precision_choice.cpu_description()
    for backbone in ("efficientnet_lite0", "efficientnet_lite2"):
        for weights in ("imagenet", "none"):
            path = precision_choice.verdict_path(backbone, weights, backbones.usable_cores(), cpu)
            precision_choice.remember(path, backbone, backbones.usable_cores(), cpu, 1.9)


_int8_pays_on_this_machine()

REPO = pathlib.Path(__file__).resolve().parent.parent
# The flags of an extraction that runs offline anywhere (its weights come
# with the install): the default backbone, movinet_a0_stream, downloads its
# model, which only the tests that use ../shared/models exercise.
LITE0 = ("--backbone", "efficientnet_lite0")
SHARED_VIDEOS = pathlib.Path(os.environ.get("SHARED_VIDEOS", REPO.parent / "shared" / "videos"))
# Real JHMDB clips (688, 21 classes) with their source-movie groups; tests skip without them.
JHMDB = pathlib.Path(os.environ.get("SHARED_JHMDB", REPO.parent / "shared" / "jhmdb-train"))
# The published MoViNet-A0 stream model (this machine cannot download it); tests skip without it.
MOVINET_MODEL = pathlib.Path(os.environ.get("SHARED_MODELS", REPO.parent / "shared" / "models")) / \
    "movinet_a0_stream_kinetics600_int8.tflite"


def make_video(path, duration, size=(320, 240), rate=25, source="testsrc2", input_args=(), output_args=()):
    """Writes a synthetic video with an ffmpeg lavfi source; returns its path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    separator = ":" if "=" in source else "="
    command = [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", *input_args, "-f", "lavfi",
               "-i", f"{source}{separator}s={width}x{height}:r={rate}:d={duration}", *output_args, str(path)]
    subprocess.run(command, check=True, timeout=300)
    return path


def make_two_class_clips(root, per_class):
    """Short clips of two classes (``bars`` and ``pattern``), one group per
    clip, ``per_class`` each, of 1 to 4 s at 10 fps; returns ``root``."""
    for i in range(per_class):
        make_video(root / "bars" / f"v_Bars_g{i:02d}_c01.mp4", 1 + i, source="smptebars", rate=10)
        make_video(root / "pattern" / f"v_Pattern_g{i:02d}_c01.avi", 1.5 + i, source="testsrc", rate=10)
    return root


def _kill_group(process):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def started(command, **options):
    """Starts ``command`` (a list) in its own process group and yields the
    ``Popen``; when the block ends, by success, failure or timeout, whatever
    of the group still runs is killed and reaped."""
    process = subprocess.Popen([str(part) for part in command], start_new_session=True,
                               **{"cwd": REPO, **options})
    try:
        yield process
    finally:
        _kill_group(process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=30)


def run(command, timeout=600, **options):
    """Runs ``command`` to its end like ``subprocess.run(capture_output=True,
    text=True)``, within ``timeout`` seconds (then the test fails, naming it,
    and the process group is killed)."""
    with started(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            stdout, stderr = process.communicate()
            pytest.fail(f"{' '.join(map(str, command))} did not finish within {timeout} s; it was killed. "
                        f"Last output: {(stderr or '')[-2000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_cli(*args, timeout=600, **options):
    """Runs ``python -m <args>`` from the repository (see ``run``)."""
    return run([sys.executable, "-m", *args], timeout=timeout, **options)


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
        np.testing.assert_array_equal(backbone.video_features(frames), features, err_msg=video_id)


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
