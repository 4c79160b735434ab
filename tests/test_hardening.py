"""Hardening, round 3 (issue 20): paths with glob characters, checkpoints
that vanish or break, scores that mean nothing, and tracebacks; one test per
numbered item, each of which failed before the fix."""

import errno
import logging
import os
import shutil

import numpy as np
import pytest

from common import console
from conftest import LITE0, make_two_class_clips, run_cli
from features import temporal_order_examples, write_extraction
from records import files
from rnn import checkpoints, training

CLASSES = ["class0", "class1", "class2", "class3"]


def _features(folder, train=12, test=4):
    write_extraction(folder, {"train": temporal_order_examples(train, 8, 4),
                              "test": temporal_order_examples(test, 8, 4, seed=1)}, CLASSES, 8)
    return folder


def _config(features, logdir, **settings):
    return training.TrainConfig(train_pattern=str(features / "train-*.tfrecord"),
                                eval_pattern=str(features / "test-*.tfrecord"), logdir=str(logdir),
                                run_name="gru", show_progress=False, validation_fraction=0.0,
                                **{"steps": 3, "checkpoint_every": 1, **settings})


def _checkpoint_steps(run_dir):
    return checkpoints.CheckpointFolder(None, run_dir / "checkpoints", keep=3).steps()


# 1. A folder path with glob characters: the extractor's checks list the
# folder, never glob it.

@pytest.mark.parametrize("folder", ["g[1]", "st*", "what?"])
def test_an_output_folder_with_glob_characters_is_that_folder_and_no_other(demo_extraction, tmp_path, folder):
    videos, demo_features, _ = demo_extraction
    # A real extraction that the unescaped pattern would reach (g1, stX, whatX).
    neighbour = tmp_path / folder.replace("[1]", "1").replace("*", "X").replace("?", "X")
    shutil.copytree(demo_features, neighbour)
    shard = next(name for name in os.listdir(neighbour) if name.endswith(".tfrecord"))
    users = tmp_path / folder
    users.mkdir()
    (users / shard).write_bytes(b"the user's own file")
    for extra in ([], ["--overwrite"]):
        refused = run_cli("extract", *LITE0, "--videos", videos, "--output_dir", users, "--progress=false", *extra)
        assert refused.returncode == 1, refused.stderr
        assert "no manifest of python -m extract lists" in refused.stderr
        assert (users / shard).read_bytes() == b"the user's own file"
    assert set(os.listdir(users)) - {files.LOCK_NAME} == {shard}
    assert files.matching(users, "*.tfrecord") == [str(users / shard)]


def test_a_pattern_whose_folder_holds_glob_characters_reads_that_folder(tmp_path):
    """13: the shards of ``runs/g[1]`` are found (not ``runs/g1``'s), and the
    messages name them."""
    from records import reader

    real = _features(tmp_path / "g[1]")
    _features(tmp_path / "g1", train=4)
    shards = reader.open_shards(str(real / "train-*.tfrecord"))
    assert shards.folder == str(real) and shards.videos == 12
    with pytest.raises(reader.NoShards,
                       match=r"no files match .*train-9\*.*; .* holds test-00000-of-00002.tfrecord, .*train-00000-of"):
        reader.open_shards(str(real / "train-9*.tfrecord"))


def test_a_file_name_with_brackets_is_named_as_a_pattern_with_its_escaped_form(tmp_path):
    """13: a pattern naming a file ``train[1].tfrecord`` (brackets are a
    character class: it matches ``train1.tfrecord``) says so, and how to
    name the file itself, instead of "holds no shards"."""
    from records import reader

    folder = _features(tmp_path / "features")
    (folder / "train[1].tfrecord").write_bytes(b"")
    with pytest.raises(reader.NoShards) as raised:
        reader.list_files(str(folder / "train[1].tfrecord"))
    message = str(raised.value)
    assert "are pattern characters, so it does not name the file train[1].tfrecord itself" in message
    escaped = str(folder / "train[[]1].tfrecord")
    assert repr(escaped) in message and reader.list_files(escaped) == [str(folder / "train[1].tfrecord")]


# 2. A --logdir with glob characters: the checkpoints of another run are
# not touched, and this run keeps its last three.

def test_a_logdir_with_brackets_keeps_its_own_checkpoints_and_no_others(tmp_path):
    features = _features(tmp_path / "features")
    training.train(_config(features, tmp_path / "r1", steps=3))
    assert _checkpoint_steps(tmp_path / "r1" / "gru") == [1, 2, 3]
    before = sorted(os.listdir(tmp_path / "r1" / "gru" / "checkpoints"))
    training.train(_config(features, tmp_path / "r[1]", steps=7))
    assert sorted(os.listdir(tmp_path / "r1" / "gru" / "checkpoints")) == before
    assert _checkpoint_steps(tmp_path / "r[1]" / "gru") == [5, 6, 7]


# 3. and 7. A resume whose checkpoints are gone or damaged.

def test_a_run_whose_checkpoint_files_are_gone_stops_and_says_restart(tmp_path):
    features = _features(tmp_path / "features")
    config = _config(features, tmp_path / "runs", steps=3)
    training.train(config)
    for name in os.listdir(config.run_dir / "checkpoints"):
        if name.startswith("ckpt-"):
            os.unlink(config.run_dir / "checkpoints" / name)
    metrics_before = (config.run_dir / "metrics.json").read_text()
    with pytest.raises(training.TrainingError, match=r"step 3 but none restores.*--restart"):
        training.train(_config(features, tmp_path / "runs", steps=5))
    assert (config.run_dir / "metrics.json").read_text() == metrics_before  # nothing trained from scratch
    restarted = training.train(_config(features, tmp_path / "runs", steps=2, restart=True))
    assert restarted["step"] == 2


@pytest.mark.parametrize("damage", ["truncated data", "deleted data", "random index"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog, damage):
    features = _features(tmp_path / "features")
    config = _config(features, tmp_path / "runs", steps=4, checkpoint_every=2)
    training.train(config)
    folder = config.run_dir / "checkpoints"
    data = next(folder / name for name in os.listdir(folder) if name.startswith("ckpt-4.data"))
    if damage == "truncated data":
        os.truncate(data, 100)
    elif damage == "deleted data":
        data.unlink()
    else:
        (folder / "ckpt-4.index").write_bytes(np.random.default_rng(0).bytes(300))
    with caplog.at_level(logging.WARNING):
        metrics = training.train(_config(features, tmp_path / "runs", steps=6, checkpoint_every=2))
    assert metrics["step"] == 6
    assert "ckpt-4" in caplog.text and "resumed from" in caplog.text and "2 steps lost" in caplog.text
    assert _checkpoint_steps(config.run_dir) == [2, 4, 6]  # ckpt-4 trained again, whole


def test_a_failed_checkpoint_save_leaves_no_partial_files_and_keeps_the_last_good_one(tmp_path):
    """8: a save that fails (here: the disk fills while TensorFlow writes its
    temporary part) deletes what it left and says so in one sentence."""
    import tensorflow as tf

    variable = tf.Variable([1.0, 2.0])
    good = checkpoints.CheckpointFolder(tf.train.Checkpoint(v=variable), tmp_path / "checkpoints", keep=3)
    good.save(1)

    class DiskFills(tf.train.Checkpoint):
        def write(self, prefix, options=None):
            temp = f"{prefix}_temp"
            os.makedirs(temp)
            with open(os.path.join(temp, "part-00000-of-00001.index"), "wb") as f:
                f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", temp)

    failing = checkpoints.CheckpointFolder(DiskFills(v=variable), tmp_path / "checkpoints", keep=3)
    with pytest.raises(checkpoints.CheckpointError, match=r"step 2 .*the disk is full; the last good one .*ckpt-1"):
        failing.save(2)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["checkpoint", "ckpt-1.data-00000-of-00001",
                                                             "ckpt-1.index"]


def test_an_unwritable_file_is_one_sentence_and_no_partial_file_is_left(tmp_path, monkeypatch):
    """8 and 9: the atomic writer removes its partial file; every command
    reports a full or read-only disk as one sentence naming the path."""
    target = tmp_path / "model.bin"
    real_fsync = os.fsync

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as raised:
        files.write_bytes_atomic(target, b"x" * 1000)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert os.listdir(tmp_path) == []
    message = console.unwritable_message(raised.value)
    assert message.startswith(f"cannot write {target}: the disk is full. Make room")
    # A read-only folder cannot be helped by making room: the sentence says what can.
    assert console.unwritable_message(OSError(errno.EROFS, "Read-only file system", "/x")).startswith(
        "cannot write /x: it is on a read-only file system. Choose a writable folder")
    assert console.unwritable_message(ValueError("no")) is None


def test_a_read_only_logdir_is_one_sentence(tmp_path):
    """9: a --logdir that cannot be written (a folder without write
    permission; for root, who may write anywhere, the kernel's read-only
    /sys) is one sentence naming the path, no traceback."""
    features = _features(tmp_path / "features")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    logdir = locked / "runs"
    if os.access(locked, os.W_OK):  # root
        logdir = "/sys/fs/video_action_runs"
        try:
            os.mkdir(logdir)
        except OSError:
            pass
        else:
            os.rmdir(logdir)
            pytest.skip("no folder here refuses this user's writes")
    try:
        result = run_cli("train", "--train_pattern", features / "train-*.tfrecord", "--eval_pattern",
                         features / "test-*.tfrecord", "--logdir", logdir, "--steps", 1, "--progress=false")
    finally:
        locked.chmod(0o700)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: cannot write {logdir}" in result.stderr and "permission denied" in result.stderr


# 4. Held-out videos that are training videos, through a second root.

def test_the_same_clips_under_another_root_split_alike_and_cannot_leak(tmp_path):
    from records.inspect import iterate_videos

    src = make_two_class_clips(tmp_path / "parent" / "src", 3)
    for number, path in enumerate(sorted(src.glob("*/*"))):
        path.rename(path.with_name(f"clip{number}{path.suffix}"))  # names without groups: the video alone

    def extract(output, videos, *extra):
        result = run_cli("extract", *LITE0, "--videos", videos, "--output_dir", tmp_path / output, "--progress=false",
                         *extra)
        assert result.returncode == 0, result.stderr
        return tmp_path / output

    def test_ids(folder):
        return sorted(video["video_id"].split("/", video["video_id"].count("/") - 1)[-1]
                      for video in iterate_videos(str(folder / "test-*.tfrecord")))

    by_src = extract("by_src", src)
    by_parent = extract("by_parent", tmp_path / "parent", "--class_depth", "2")
    assert test_ids(by_src) == test_ids(by_parent) and len(test_ids(by_src)) == 2
    wider = extract("wider", tmp_path / "parent", "--class_depth", "2", "--test_fraction", "0.5")
    assert set(test_ids(wider)) > set(test_ids(by_src))
    with pytest.raises(training.TrainingError, match=r"held-out videos of .*wider are training videos .*by_src "
                                                     r"under another path \(the same file content\)"):
        training.train(dataclasses_replace(_config(by_src, tmp_path / "runs"),
                                           eval_pattern=str(wider / "test-*.tfrecord")))
    assert not (tmp_path / "runs").exists()


# 5. and 6. Scores that mean nothing, and splits that hold nothing.

def test_training_on_one_class_is_refused_and_untrained_test_classes_are_named(tmp_path, caplog):
    one_class = tmp_path / "one"
    write_extraction(one_class, {"train": [(np.ones((4, 4), np.float32), 0, "class0")] * 6,
                                 "test": [(np.ones((4, 4), np.float32), 0, "class0")] * 2}, ["class0", "class1"], 8)
    with pytest.raises(training.TrainingError, match=r"only 1 class"):
        training.train(_config(one_class, tmp_path / "runs"))
    assert not (tmp_path / "runs" / "gru" / "checkpoints").exists()

    partial = tmp_path / "partial"
    train = [example for example in temporal_order_examples(12, 8, 4) if example[1] != 3]
    write_extraction(partial, {"train": train, "test": temporal_order_examples(4, 8, 4, seed=1)}, CLASSES, 8)
    with caplog.at_level(logging.WARNING):
        training.train(_config(partial, tmp_path / "runs2", steps=1))
    assert "class3" in caplog.text and "no training videos" in caplog.text


def test_a_held_out_split_covering_few_classes_is_warned_with_what_to_do(tmp_path, caplog):
    from rnn import data

    few = tmp_path / "few"
    one_class_test = [example for example in temporal_order_examples(8, 8, 4, seed=1) if example[1] == 0]
    write_extraction(few, {"train": temporal_order_examples(12, 8, 4), "test": one_class_test}, CLASSES, 8)
    with caplog.at_level(logging.WARNING):
        data.open_run_data(str(few / "train-*.tfrecord"), str(few / "test-*.tfrecord"))
    assert "the test split covers only 1 of the 4 trained classes" in caplog.text
    assert "--test_fraction" in caplog.text

    caplog.clear()
    every_class = tmp_path / "every"
    write_extraction(every_class, {"train": temporal_order_examples(12, 8, 4),
                                   "test": temporal_order_examples(8, 8, 4, seed=1)}, CLASSES, 8)
    with caplog.at_level(logging.WARNING):
        data.open_run_data(str(every_class / "train-*.tfrecord"), str(every_class / "test-*.tfrecord"))
    assert "covers only" not in caplog.text


def test_the_extractor_names_classes_whose_videos_were_all_held_out():
    import types

    from extract import finalize

    shards = [types.SimpleNamespace(split="train", name="train-0"), types.SimpleNamespace(split="test", name="test-0")]
    indexes = {"train-0": {"videos": [{"label": 0}, {"label": 1}]},
               "test-0": {"videos": [{"label": 1}, {"label": 2}, {"label": 3}]}}
    plan = types.SimpleNamespace(shards=shards, indexes=indexes,
                                 video_set=types.SimpleNamespace(class_names=["run", "sit", "stand", "wave"]))
    assert finalize.untrained_classes(plan) == ("stand", "wave")
    summary = finalize.Summary("out", 5, 0, 0, 0, 0, 0.0, 0.0, 1, 0, untrained_classes=("stand", "wave"))
    assert "2 classes have held-out videos but no training video (stand, wave)" in str(summary)


def test_an_empty_split_is_one_sentence_and_leaves_no_run_folder(tmp_path):
    empty_test = tmp_path / "empty_test"
    write_extraction(empty_test, {"train": temporal_order_examples(8, 8, 4), "test": []}, CLASSES, 8)
    with pytest.raises(training.TrainingError, match=r"test split .* holds no videos"):
        training.train(_config(empty_test, tmp_path / "runs"))
    assert not (tmp_path / "runs" / "gru").exists()
    empty_train = tmp_path / "empty_train"
    write_extraction(empty_train, {"test": temporal_order_examples(4, 8, 4), "train": []}, CLASSES, 8)
    with pytest.raises(training.TrainingError, match=r"train split .* holds no videos"):
        training.train(dataclasses_replace(_config(empty_train, tmp_path / "runs"), eval_pattern=""))
    assert not (tmp_path / "runs" / "gru").exists()


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


# 10. extract --overwrite on the folder a running train.py reads.

def test_overwrite_waits_for_the_training_run_that_reads_the_shards(demo_extraction, tmp_path):
    import subprocess
    import sys
    import time

    from conftest import started

    videos, demo_features, _ = demo_extraction
    features = tmp_path / "features"
    shutil.copytree(demo_features, features)
    before = {name: (features / name).read_bytes() for name in os.listdir(features) if name.endswith(".tfrecord")}
    command = [sys.executable, "-m", "train", "--train_pattern", features / "train-*.tfrecord", "--eval_pattern",
               features / "test-*.tfrecord", "--logdir", tmp_path / "runs", "--steps", 100000, "--progress=false"]
    with started(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as trainer:
        deadline = time.time() + 120
        while not (tmp_path / "runs" / "gru" / "train").exists():
            assert trainer.poll() is None and time.time() < deadline
            time.sleep(0.5)
        refused = run_cli("extract", *LITE0, "--videos", videos, "--output_dir", features, "--overwrite", "--fps", 4,
                          "--progress=false")
        assert refused.returncode == 1
        assert "a train.py is reading its shards; wait for it to end" in refused.stderr
        assert {name: (features / name).read_bytes() for name in before} == before
    assert run_cli("extract", *LITE0, "--videos", videos, "--output_dir", features, "--overwrite", "--fps", 4,
                   "--progress=false").returncode == 0  # the lock went with the trainer


def test_training_waits_for_an_extraction_that_writes_its_shards(tmp_path):
    features = _features(tmp_path / "features")
    with files.exclusive(features, "busy"):
        with pytest.raises(training.TrainingError, match=r"an extraction is writing to .*features; wait"):
            training.train(_config(features, tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


# 11. and 12. A video where a run folder is wanted; a file name that is not UTF-8.

def test_predict_with_a_video_as_the_run_is_one_sentence(tmp_path):
    video = tmp_path / "video.avi"
    video.write_bytes(b"not a run")
    result = run_cli("predict", "--run", video, video)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "is a file, not a run folder" in result.stderr


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed_escaped(tmp_path):
    root = make_two_class_clips(tmp_path / "clips", 2)
    first = next(iter(sorted((root / "pattern").iterdir())))
    os.rename(first, os.path.join(os.fsencode(root / "pattern"), b"bad\xffbyte.avi"))
    result = run_cli("extract", *LITE0, "--videos", root, "--output_dir", tmp_path / "features", "--progress=false",
                     "--test_fraction", "0")
    assert result.returncode == 3, result.stderr  # some videos failed
    assert "errors.tsv" in result.stdout
    assert "XNNPACK" not in result.stderr and "LiteRT engine on" not in result.stderr  # start-up noise (issue 21)
    from records.inspect import iterate_videos

    ids = sorted(video["video_id"] for video in iterate_videos(str(tmp_path / "features" / "*.tfrecord")))
    assert len(ids) == 3 and not any("bad" in video_id for video_id in ids)
    _, errors = files.read_tsv(tmp_path / "features" / "errors.tsv")
    assert [row[0] for row in errors] == ["pattern/bad\\xffbyte.avi"]
    assert "not valid UTF-8" in errors[0][1]


def test_a_first_run_on_a_machine_converts_the_backbone_without_tensorflow_start_up_noise(tmp_path):
    """Issue 21 item 10: the first run on a machine (an empty model cache)
    converts the backbone; that conversion imported TensorFlow unfiltered
    and printed its absl, cudart and cuInit lines."""
    root = make_two_class_clips(tmp_path / "clips", 1)
    result = run_cli("extract", *LITE0, "--videos", root, "--output_dir", tmp_path / "features", "--progress=false",
                     "--precision", "int8", "--test_fraction", 0, env={**os.environ, "VIDEO_FEATURES_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "cached the LiteRT conversion" in result.stderr  # the conversion did run
    assert [line for line in result.stderr.splitlines() if not line.startswith("INFO: ")] == []


# 15. Messages that fit the command: predict on a damaged run.json, and a
# printed command that a shell can run as printed.

def test_predict_on_a_damaged_run_file_says_what_predict_needs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"model": ')
    video = tmp_path / "video.avi"
    video.write_bytes(b"")
    result = run_cli("predict", "--run", run, video)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "run.json is not valid JSON" in result.stderr
    assert "give the run folder of a finished train.py run" in result.stderr
    assert "--run_name" not in result.stderr and "resumed" not in result.stderr


def test_the_printed_tensorboard_command_runs_as_printed_for_a_logdir_with_a_space(tmp_path):
    import shlex

    features = _features(tmp_path / "features")
    logdir = tmp_path / "my runs"
    result = run_cli("train", "--train_pattern", features / "train-*.tfrecord", "--eval_pattern",
                     features / "test-*.tfrecord", "--logdir", logdir, "--steps", 2, "--validation_fraction", 0,
                     "--progress=false")
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1]
    assert shlex.split(command) == ["tensorboard", "--logdir", str(logdir)]


# 1. (the acceptance) Every path argument of every command, with glob
# characters and a space, beside a folder that the unescaped pattern would
# match: each command uses its own folder and never reads or touches the other.

def test_every_command_takes_paths_with_glob_characters_literally(tmp_path):
    root = tmp_path / "data [1] *?"
    decoy = tmp_path / "data 1 xy"  # what glob would read for ``root``
    decoy_files = {decoy / "features" / "train-00000-of-00001.tfrecord": b"the user's own file",
                   decoy / "features" / "test-00000-of-00001.tfrecord": b"the user's own file",
                   decoy / "logs" / "gru" / "checkpoints" / "ckpt-1.index": b"the user's own file",
                   decoy / "logs" / "gru" / "model.keras": b"the user's own file"}
    for path, content in decoy_files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    clips = make_two_class_clips(root / "clips", 2)
    features, logs = root / "features", root / "logs"
    train = ["train", "--train_pattern", features / "train-*.tfrecord", "--eval_pattern", features / "test-*.tfrecord",
             "--logdir", logs, "--validation_fraction", 0, "--progress=false"]
    commands = [
        ["extract", *LITE0, "--videos", clips, "--output_dir", features, "--progress=false"],
        ["records", "inspect", features / "*.tfrecord"],
        [*train, "--steps", 3],
        [*train, "--steps", 2, "--restart"],
        ["train", "--mode", "eval", "--logdir", logs, "--run_name", "gru",
         "--eval_pattern", features / "test-*.tfrecord"],
        ["predict", "--run", logs / "gru", next((clips / "bars").iterdir())],
    ]
    for command in commands:
        result = run_cli(*command)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert "4 written, 0 failed" in run_cli("extract", *LITE0, "--videos", clips, "--output_dir", features,
                                            "--progress=false").stdout
    assert {path: path.read_bytes() for path in decoy_files} == decoy_files
    assert sorted(str(path.relative_to(decoy)) for path in decoy.rglob("*") if path.is_file()) == \
        sorted(str(path.relative_to(decoy)) for path in decoy_files)
