"""Stage 2: reader, masking, learning temporal order, resume, TensorBoard,
metrics, bad input, evaluation and prediction."""

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from features import temporal_order_examples, write_extraction
from records import reader
from rnn import models, run_dir as run_dir_lib, training

CLASSES = ["class0", "class1", "class2", "class3"]


@pytest.mark.parametrize("cell", models.CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_frames_do_not_change_predictions(cell, bidirectional):
    model = models.build_model(models.ModelConfig(cell=cell, units=16, bidirectional=bidirectional), 3, 8)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 30, 8)).astype(np.float32)
    num_frames = np.array([4, 11, 20], np.int32)
    padded = features[:, :20].copy()
    for i, n in enumerate(num_frames):
        padded[i, n:] = 0
    reference = model({"features": padded, "num_frames": num_frames}).numpy()
    # Longer padding, filled with garbage: the mask must hide all of it.
    garbage = features.copy()
    for i, n in enumerate(num_frames):
        garbage[i, n:] = rng.normal(scale=50, size=(30 - n, 8))
    np.testing.assert_allclose(model({"features": garbage, "num_frames": num_frames}).numpy(), reference,
                               rtol=1e-5, atol=1e-5)
    # ...while a real frame more does change the prediction.
    longer = model({"features": garbage, "num_frames": num_frames + 1}).numpy()
    assert np.abs(longer - reference).max() > 1e-3


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_reader_yields_padded_batches(tmp_path, dtype):
    examples = temporal_order_examples(10, max_frames=12, feature_dim=6)
    manifest = write_extraction(tmp_path, {"train": examples}, CLASSES, max_frames=12, dtype=dtype)
    spec = reader.FeatureSpec(6, 12, 4)
    data = reader.make_dataset(str(tmp_path / "train-*.tfrecord"), spec, manifest["dtype"], batch_size=4,
                               training=False)
    batches = list(data)
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    seen = {}
    for inputs, labels in batches:
        assert inputs["features"].shape[1:] == (12, 6) and inputs["features"].dtype == tf.float32
        for features, n, label in zip(inputs["features"].numpy(), inputs["num_frames"].numpy(), labels.numpy()):
            seen[features[0].tobytes()] = (features, n, label)
            assert not features[n:].any()
    assert len(seen) == 10
    tolerance = 1e-2 if dtype == "float16" else 1e-6
    for features, label, _ in examples:
        match = min(seen.values(), key=lambda s: np.abs(s[0][0] - features[0]).max())
        assert match[1] == len(features) and match[2] == label
        np.testing.assert_allclose(match[0][:len(features)], features, atol=tolerance, rtol=tolerance)


def test_reader_training_mode_shuffles_and_repeats(tmp_path):
    write_extraction(tmp_path, {"train": temporal_order_examples(6, max_frames=8, feature_dim=4)}, CLASSES, 8)
    data = reader.make_dataset(str(tmp_path / "train-*.tfrecord"), reader.FeatureSpec(4, 8, 4), "float32",
                               batch_size=4, training=True, seed=1)
    labels = [batch[1].numpy() for batch in data.take(6)]
    assert all(len(batch) == 4 for batch in labels)  # 24 examples out of 6: it repeats


def test_reader_rejects_labels_outside_the_model(tmp_path):
    write_extraction(tmp_path, {"train": temporal_order_examples(4, max_frames=8, feature_dim=4)}, CLASSES, 8)
    data = reader.make_dataset(str(tmp_path / "train-*.tfrecord"), reader.FeatureSpec(4, 8, 2), "float32",
                               batch_size=4, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="label outside the 2 classes of the model"):
        list(data)


def test_manifest_checks(tmp_path):
    with pytest.raises(reader.NoShards, match="no files match"):
        reader.open_shards(str(tmp_path / "*.tfrecord"))
    manifest = write_extraction(tmp_path, {"train": temporal_order_examples(4, 8, 4)}, CLASSES, 8)
    shards = reader.open_shards(str(tmp_path / "train-*.tfrecord"))
    assert (shards.manifest, shards.splits, shards.videos) == (manifest, ["train"], 4)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ValueError, match="not finished"):
        reader.open_shards(str(tmp_path / "train-*.tfrecord"))


@pytest.fixture(scope="module")
def order_task(tmp_path_factory):
    """Features of the temporal-order task, train and held-out."""
    folder = tmp_path_factory.mktemp("order_features")
    write_extraction(folder, {"train": temporal_order_examples(256, seed=0),
                              "test": temporal_order_examples(64, seed=1)}, CLASSES, max_frames=20)
    return folder


def _config(order_task, logdir, **overrides):
    settings = dict(model=models.ModelConfig(units=32), train_pattern=str(order_task / "train-*.tfrecord"),
                    eval_pattern=str(order_task / "test-*.tfrecord"), logdir=str(logdir), steps=150,
                    eval_every=50, checkpoint_every=50, log_every=10)
    settings.update(overrides)
    return training.TrainConfig(**settings)


class _ShardsOfMovies:
    """Training shards as ``carve_validation`` sees them: 20 movies, each
    with clips of the three classes (HMDB-like: a movie in several classes)."""

    def videos_by_group(self):
        return {f"Movie{m}": [(f"{action}/Movie{m}_{action}_{n}.avi", label)
                              for label, action in enumerate(("sit", "stand", "walk")) for n in range(2)]
                for m in range(20)}


def test_the_validation_split_is_whole_movies_of_the_training_videos():
    from rnn import data

    by_group = _ShardsOfMovies().videos_by_group()
    held_out = data.carve_validation(_ShardsOfMovies(), 0.15)
    movies = {video_id.split("/")[1].split("_")[0] for video_id in held_out}
    assert len(movies) == 3  # 15 % of each class's 20 movies
    assert held_out == {video_id for movie in movies for video_id, _ in by_group[movie]}  # every clip of them
    assert data.carve_validation(_ShardsOfMovies(), 0.15) == held_out  # the same every time
    assert data.carve_validation(_ShardsOfMovies(), 0.0) == frozenset()


def test_standardization_statistics_are_those_of_the_real_frames():
    rng = np.random.default_rng(0)
    features = rng.normal(3.0, 2.0, size=(6, 10, 4)).astype(np.float32)
    features[:, :, 3] = 1.0  # constant in training: floored, not divided by zero
    num_frames = np.array([10, 3, 7, 1, 10, 5])
    for video, count in enumerate(num_frames):
        features[video, count:] = 99.0  # padding must not count
    batches = [({"features": tf.constant(features[:3]), "num_frames": tf.constant(num_frames[:3])}, None),
               ({"features": tf.constant(features[3:]), "num_frames": tf.constant(num_frames[3:])}, None)]
    statistics = models.training_statistics(batches)
    real = np.concatenate([video[:count] for video, count in zip(features, num_frames)])
    mean, std = statistics["frames"]
    np.testing.assert_allclose(mean, real.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std[:3], real.std(0)[:3], rtol=1e-5)
    # A tenth of the typical spread (root mean square over the dimensions).
    assert std[3] == pytest.approx(models.STD_FLOOR * np.sqrt(np.mean(real.std(0) ** 2)), rel=1e-4)
    pooled = np.array([np.concatenate([((video[:count] - mean) / std).mean(0), (video[:count] / std).std(0)])
                       for video, count in zip(features, num_frames)])
    np.testing.assert_allclose(statistics["videos"][0], pooled.mean(0), rtol=1e-4, atol=1e-5)


def test_mean_frame_cannot_solve_the_order_task():
    examples = temporal_order_examples(400, seed=3)
    means = np.array([f.mean(axis=0) for f, _, _ in examples])
    labels = np.array([label for _, label, _ in examples])
    centroids = np.array([means[labels == k].mean(axis=0) for k in range(4)])
    nearest = np.argmin(((means[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() < 0.65  # pairs are indistinguishable: about chance within a pair


@pytest.mark.parametrize("cell", models.CELLS)
def test_both_cells_learn_temporal_order(order_task, tmp_path, cell):
    config = _config(order_task, tmp_path, model=models.ModelConfig(cell=cell, units=32))
    metrics = training.train(config)
    selected, final = metrics["selected"], metrics["final"]
    assert selected["test"]["top1"] >= 0.9, selected
    # The validation split (whole groups of the training videos) chose the model, by its own scores.
    assert selected["chosen_on"].startswith("validation split (") and selected["validation"]["split"] == "validation"
    assert selected["validation"]["top1"] >= final["validation"]["top1"]
    assert (selected["test"]["split"], selected["test"]["videos"], selected["test"]["classes"]) == ("test", 64, 4)
    stored = json.loads((tmp_path / cell / "metrics.json").read_text())
    assert stored["step"] == 150 and stored["selected"]["test"]["top1"] == selected["test"]["top1"]
    assert set(stored["final"]["test"]["per_class"]) == set(CLASSES)
    assert np.array(stored["final"]["test"]["confusion_matrix"]).sum() == 64
    assert stored["train"]["examples_per_second"] > 0

    # The run folder holds what TensorBoard shows (tests/test_tensorboard.py looks closer).
    # With 4 classes top-5 would always be 1: top-3 is reported instead.
    assert _tags(tmp_path / cell / "train") >= {"metrics/loss", "metrics/top1", "metrics/top3"}
    assert "metrics/top5" not in _tags(tmp_path / cell / "train") | _tags(tmp_path / cell / "test")
    assert (stored["final"]["test"]["k"], 0 <= stored["final"]["test"]["top_k"] <= 1) == (3, True)

    # The exported model is the refit for the chosen length: evaluating it gives its test scores.
    assert metrics["refit"]["steps"] == selected["step"] and metrics["exported"]["test"] == metrics["refit"]["test"]
    evaluated = training.evaluate_run(tmp_path / cell, config.eval_pattern)
    assert evaluated["top1"] == pytest.approx(metrics["exported"]["test"]["top1"])
    assert evaluated["loss"] == pytest.approx(metrics["exported"]["test"]["loss"], rel=1e-4)


def _tags(folder):
    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def _steps_logged(folder, tag="metrics/loss"):
    steps = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        steps.append([e.step for e in tf.compat.v1.train.summary_iterator(str(path))
                      if any(v.tag == tag for v in e.summary.value)])
    return steps


def test_running_again_resumes_from_the_last_checkpoint(order_task, tmp_path):
    first = training.train(_config(order_task, tmp_path, steps=40, checkpoint_every=20, eval_every=20))
    assert first["step"] == 40
    resumed = training.train(_config(order_task, tmp_path, steps=60, checkpoint_every=20, eval_every=20))
    assert resumed["step"] == 60
    sessions = _steps_logged(tmp_path / "gru" / "train")
    assert sessions[0][0] == 10 and sessions[-1][0] == 50  # the second session started at step 41
    assert tf.train.latest_checkpoint(tmp_path / "gru" / "checkpoints").endswith("ckpt-60")

    restarted = training.train(_config(order_task, tmp_path, steps=20, checkpoint_every=20, eval_every=20,
                                    restart=True))
    assert restarted["step"] == 20 and _steps_logged(tmp_path / "gru" / "train") == [[10, 20]]


def test_a_resumed_run_drops_what_every_split_logged_after_its_checkpoint(order_task, tmp_path):
    """A session killed after its last checkpoint leaves events of steps
    that the next session trains again: they are dropped in every events
    folder (the validation split's too), so that no chart shows a step twice."""
    training.train(_config(order_task, tmp_path, steps=40, checkpoint_every=20, eval_every=20))
    for split in ("train", "validation", "test"):
        # What a killed session would have logged at step 50, after its checkpoint of step 40.
        writer = tf.summary.create_file_writer(str(tmp_path / "gru" / split))
        with writer.as_default():
            tf.summary.scalar("metrics/loss", 9.0, step=50)
        writer.close()
    training.train(_config(order_task, tmp_path, steps=60, checkpoint_every=20, eval_every=20))
    for split in ("validation", "test"):
        steps = sorted(step for session in _steps_logged(tmp_path / "gru" / split) for step in session)
        assert steps == [20, 40, 60], split
    train_steps = [step for session in _steps_logged(tmp_path / "gru" / "train") for step in session]
    assert train_steps.count(50) == 1


def test_resuming_with_other_settings_is_refused_and_a_longer_run_is_recorded(order_task, tmp_path):
    training.train(_config(order_task, tmp_path, steps=10, run_name="run"))
    with pytest.raises(training.TrainingError, match=r"other settings \(units: 32 there, 64 now\)"):
        training.train(_config(order_task, tmp_path, steps=20, run_name="run", model=models.ModelConfig(units=64)))
    with pytest.raises(training.TrainingError, match=r"batch_size: 32 there, 8 now; learning_rate: 0.001 there, 0.01 now"):
        training.train(_config(order_task, tmp_path, steps=20, run_name="run", batch_size=8, learning_rate=0.01))
    other_data = tmp_path / "copy"
    shutil.copytree(order_task, other_data)
    with pytest.raises(training.TrainingError, match="train_pattern: .* there, .*copy/train-.* now"):
        training.train(_config(order_task, tmp_path, steps=20, run_name="run",
                            train_pattern=str(other_data / "train-*.tfrecord")))
    # A longer run is fine, and run.json says so.
    assert training.train(_config(order_task, tmp_path, steps=20, run_name="run"))["step"] == 20
    sessions = json.loads((tmp_path / "run" / "run.json").read_text())["sessions"]
    assert [(s["from_step"], s["steps"]) for s in sessions] == [(0, 10), (10, 20)]


def test_eval_data_from_another_extraction_is_refused(order_task, tmp_path):
    other = tmp_path / "other"
    write_extraction(other, {"test": temporal_order_examples(8, max_frames=30)}, CLASSES, max_frames=30)
    with pytest.raises(training.TrainingError,
                       match="extracted differently.*max_frames: 20 in the training data, 30 there"):
        training.train(_config(order_task, tmp_path, eval_pattern=str(other / "test-*.tfrecord")))


def test_nan_loss_stops_with_a_clear_message_and_keeps_good_checkpoints(tmp_path):
    examples = temporal_order_examples(64)
    for features, _, _ in examples[:8]:
        features[0, 0] = np.nan
    data = tmp_path / "data"
    write_extraction(data, {"train": examples, "test": temporal_order_examples(8)}, CLASSES, max_frames=20)
    config = _config(data, tmp_path / "logs", steps=30)
    with pytest.raises(training.TrainingError, match=r"loss became nan at step .*train-00000-of-00002.tfrecord: "
                                                  r"non-finite feature values \(NaN or Inf\) in 4 videos"):
        training.train(config)
    assert tf.train.latest_checkpoint(tmp_path / "logs" / "gru" / "checkpoints") is None


def test_missing_training_data(tmp_path):
    with pytest.raises(training.TrainingError, match="no files match"):
        training.train(training.TrainConfig(train_pattern=str(tmp_path / "none-*.tfrecord"), logdir=str(tmp_path)))


def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes(order_task, tmp_path):
    import re
    import signal
    import subprocess
    import sys
    import time

    from conftest import run, started

    command = [sys.executable, "train.py", "--units", "32", "--steps", "100000", "--logdir", str(tmp_path),
               "--run_name", "gru", "--train_pattern", str(order_task / "train-*.tfrecord"),
               "--eval_pattern", str(order_task / "test-*.tfrecord")]
    checkpoints = tmp_path / "gru" / "checkpoints"
    with started(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 300
        while tf.train.latest_checkpoint(checkpoints) is None:
            assert process.poll() is None, "the run ended without a checkpoint: " + process.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        time.sleep(1.0)  # some steps past the periodic checkpoint
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    interrupted_at = int(re.search(r"interrupted at step (\d+)", stderr).group(1))
    assert tf.train.latest_checkpoint(checkpoints).endswith(f"ckpt-{interrupted_at}")

    command[command.index("100000")] = str(interrupted_at + 5)
    resumed = run(command, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(step {interrupted_at})" in resumed.stderr
    assert f"run: {tmp_path / 'gru'}, {interrupted_at + 5} steps" in resumed.stdout


def _user_folder(folder):
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\documentclass{article}")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("run_name", ["..", ".", "a/b", "../escape", ""])
def test_run_names_are_plain_folder_names(run_name):
    """Hardening 1: --run_name .. once made --restart delete the working directory."""
    with pytest.raises(ValueError, match="must be a plain folder name"):
        training.TrainConfig(run_name=run_name)


def test_restart_deletes_only_what_train_wrote(order_task, tmp_path):
    """Hardening 1: --restart on a user's folder is refused and deletes
    nothing; on a run, it deletes train.py's files and keeps the user's."""
    docs = _user_folder(tmp_path / "docs")
    for restart in (False, True):
        with pytest.raises(training.TrainingError, match="is not a run of train.py .* never writes into or deletes"):
            training.train(_config(order_task, tmp_path, steps=10, run_name="docs", restart=restart))
    assert {p.name: p.read_bytes() for p in (tmp_path / "docs").iterdir()} == docs

    training.train(_config(order_task, tmp_path, steps=10, run_name="run"))
    run = tmp_path / "run"
    # Hardening round 2, item 6: files named almost like train.py's own are
    # the user's; only exact names of what train.py and TensorFlow write go.
    users = {"notes.md": "what I tried", "checkpoints/my_copy.txt": "keep me",
             "checkpoints/ckpt-mybackup.txt": "backup", "events.out.tfevents.my_copy_of_old_run": "old run",
             "checkpoints/ckpt-9_temp/notes.txt": "notes", "test/embeddings.ckpt-mine.txt": "mine",
             "train/run.json": "not the run's run.json"}
    for name, text in users.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    before = set(run_dir_lib.own_files(run))
    assert {"run.json", "model.keras", "checkpoints/checkpoint"} <= before and not before & set(users)
    training.train(_config(order_task, tmp_path, steps=10, run_name="run", restart=True))
    assert {name: (run / name).read_text() for name in users} == users
    assert _steps_logged(run / "train") == [[10]]  # one fresh event stream: the old one was deleted


def test_two_runs_never_train_in_one_folder(order_task, tmp_path):
    """Hardening 6: the run folder is locked like the extractor's output."""
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running train.py holds it
        with pytest.raises(training.TrainingError, match="another train.py is using .*run"):
            training.train(_config(order_task, tmp_path, steps=10, run_name="run"))
    assert not (run / "run.json").exists()


def test_stray_or_missing_shards_are_refused_by_name(tmp_path):
    """Hardening 5: shards of a second extraction beside the first, or a
    deleted shard, are named instead of silently changing the data."""
    features = tmp_path / "features"
    write_extraction(features, {"train": temporal_order_examples(8, 8, 4)}, CLASSES, 8)
    second = tmp_path / "second"
    write_extraction(second, {"train": temporal_order_examples(4, 8, 4)}, CLASSES, 8)
    stray = features / "train-00000-of-00001.tfrecord"
    stray.write_bytes((second / "train-00000-of-00002.tfrecord").read_bytes())
    config = training.TrainConfig(train_pattern=str(features / "train-*.tfrecord"), eval_pattern="",
                               logdir=str(tmp_path / "logs"), steps=2)
    with pytest.raises(training.TrainingError, match="matches 1 files that .*manifest.json does not list: "
                                                  "train-00000-of-00001.tfrecord"):
        training.train(config)
    stray.unlink()
    with pytest.raises(training.TrainingError, match="matches 1 of the 'train' split's shards"):
        training.train(dataclasses.replace(config, train_pattern=str(features / "train-00000-*.tfrecord")))
    (features / "train-00001-of-00002.tfrecord").unlink()
    with pytest.raises(training.TrainingError, match="1 shards of the 'train' split .* are missing: "
                                                  "train-00001-of-00002.tfrecord. Run the same python -m extract"):
        training.train(config)


def _damage(shard):
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: the record's checksum no longer matches
    shard.write_bytes(bytes(data))


def test_damaged_shards_and_nan_held_out_features_are_named(order_task, tmp_path):
    """Hardening 7 and 9: train.py and --mode eval name the damaged shard and
    say what to do; NaN held-out features are an error naming the shard, not
    an eval loss of NaN."""
    data = tmp_path / "data"
    shutil.copytree(order_task, data)
    config = _config(data, tmp_path / "logs", steps=20, eval_every=10)
    metrics = training.train(config)
    _damage(data / "train-00001-of-00002.tfrecord")
    with pytest.raises(training.TrainingError, match=r"train-00001-of-00002.tfrecord: damaged or cut short .*Delete "
                                                  "these shards and run the same python -m extract command again"):
        training.train(dataclasses.replace(config, steps=60, run_name="second"))

    _damage(data / "test-00000-of-00002.tfrecord")
    with pytest.raises(training.TrainingError, match="test-00000-of-00002.tfrecord: damaged or cut short"):
        training.evaluate_run(tmp_path / "logs" / "gru", config.eval_pattern)

    held_out = tmp_path / "nan_test"
    examples = temporal_order_examples(8, seed=1)
    examples[3][0][2, 5] = np.inf
    write_extraction(held_out, {"test": examples}, CLASSES, max_frames=20)
    with pytest.raises(training.TrainingError, match=r"test-00001-of-00002.tfrecord: non-finite feature values "
                                                  r"\(NaN or Inf\) in 1 videos: class3/test_3.avi"):
        training.evaluate_run(tmp_path / "logs" / "gru", str(held_out / "test-*.tfrecord"))
    assert metrics["final"]["test"]["top1"] >= 0  # the first run was fine


def test_truncated_model_is_named_and_training_again_restores_it(order_task, tmp_path):
    """Hardening 7: a cut-short model.keras says so (Keras says "File not
    found"), and the same train.py command writes it again."""
    config = _config(order_task, tmp_path, steps=10)
    training.train(config)
    model = tmp_path / "gru" / "model.keras"
    model.write_bytes(model.read_bytes()[:2000])
    with pytest.raises(training.TrainingError, match="model.keras cannot be loaded .*cut short or damaged. Run the "
                                                  "same train.py command again"):
        training.evaluate_run(tmp_path / "gru", config.eval_pattern)
    training.train(config)
    assert training.evaluate_run(tmp_path / "gru", config.eval_pattern)["examples"] == 64


def test_training_without_a_test_split(tmp_path, caplog):
    """Hardening 11: an extraction without a test split trains, says so, and
    exports a model; hardening 12: without a bar, progress lines with the
    loss and the time left."""
    data = tmp_path / "data"
    write_extraction(data, {"train": temporal_order_examples(64)}, CLASSES, max_frames=20)
    config = training.TrainConfig(model=models.ModelConfig(units=16), train_pattern=str(data / "train-*.tfrecord"),
                               eval_pattern=str(data / "test-*.tfrecord"), logdir=str(tmp_path / "logs"), steps=12,
                               log_every=4, progress_seconds=0)
    with caplog.at_level("INFO"):
        metrics = training.train(config)
    assert metrics["final"]["test"] is None and metrics["selected"]["test"] is None
    assert "no held-out data: the extraction in" in caplog.text and "wrote no test split" in caplog.text
    assert re.search(r"training gru: \d+/12 steps \(\d+ %\), loss [\d.]+, .* elapsed, ETA ", caplog.text)
    assert (tmp_path / "logs" / "gru" / "model.keras").exists()
    # A pattern that matches nothing elsewhere is still an error (a typo must not skip evaluation).
    with pytest.raises(training.TrainingError, match="no files match .*--eval_pattern=''"):
        training.train(dataclasses.replace(config, eval_pattern=str(tmp_path / "typo" / "test-*.tfrecord")))


@pytest.mark.parametrize("overrides, message", [({"batch_size": 0}, "--batch_size must be a finite number > 0"),
                                                ({"learning_rate": -1.0}, "--learning_rate must be a finite number > 0"),
                                                ({"clip_norm": float("inf")}, "--clip_norm must be a finite number"),
                                                ({"lr_decay": "step"}, "unknown --lr_decay")])
def test_training_settings_are_checked_up_front(overrides, message):
    """Hardening 8."""
    with pytest.raises(ValueError, match=message):
        training.TrainConfig(**overrides)


def test_a_small_training_loss_is_printed_with_three_significant_digits(tmp_path, caplog):
    """Not ``loss 0.000`` once the model fits the training videos: the
    digits that carry information."""
    import logging

    write_extraction(tmp_path / "features", {"train": temporal_order_examples(8, 8, 4)}, CLASSES, 8)
    config = training.TrainConfig(train_pattern=str(tmp_path / "features" / "train-*.tfrecord"), eval_pattern="",
                                  logdir=str(tmp_path / "runs"), steps=150, learning_rate=0.03, log_every=10,
                                  show_progress=False, progress_seconds=0,
                                  model=models.ModelConfig(dropout=0, input_dropout=0, classifier_l2=0))
    with caplog.at_level(logging.INFO):
        training.train(config)
    losses = re.findall(r"loss ([0-9.e+-]+)", caplog.text)
    assert losses and float(losses[-1]) < 0.0005  # "0.000" in three decimals
    assert all(float(loss) > 0 and len(re.sub(r"e.*|\.|^0\.0*", "", loss.lstrip("0."))) <= 3 for loss in losses)


def _refit_task(folder):
    write_extraction(folder, {"train": temporal_order_examples(48, 10, 6), "test": temporal_order_examples(
        16, 10, 6, seed=1)}, CLASSES, max_frames=10)
    return folder


def _refit_config(task, logdir, **changes):
    settings = dict(steps=30, eval_every=10, checkpoint_every=10, model=models.ModelConfig(units=16),
                    show_progress=False)
    return training.TrainConfig(train_pattern=str(task / "train-*.tfrecord"),
                                eval_pattern=str(task / "test-*.tfrecord"), logdir=str(logdir),
                                **{**settings, **changes})


def test_the_validation_split_chooses_the_length_and_a_refit_on_every_video_is_exported(tmp_path):
    """Issue 33: a new model trained on every training video (the validation
    split's too) for the steps the validation split chose is what the run
    exports; the refit lives in refit/, resumes, starts over when the length
    changes, and --restart deletes it."""
    task = _refit_task(tmp_path / "task")
    config = _refit_config(task, tmp_path / "runs")
    metrics = training.train(config)
    selected, refit = metrics["selected"], metrics["refit"]
    assert refit["steps"] == selected["step"] and refit["videos"] == 48  # validation videos included
    assert metrics["exported"]["test"] == refit["test"]
    assert metrics["exported"]["model"].startswith("the model refit on all 48 training videos")
    # model.keras is the refit's final model: it scores what metrics.json says.
    exported = run_dir_lib.load_final_model(config.run_dir)
    data = reader.open_shards(str(task / "test-*.tfrecord"))
    logits = np.concatenate([exported(inputs).numpy() for inputs, _ in reader.make_dataset(
        data.files, data.spec, "float32", 16, training=False)])
    labels = np.concatenate([labels.numpy() for _, labels in reader.make_dataset(data.files, data.spec, "float32",
                                                                                 16, training=False)])
    assert np.mean(logits.argmax(1) == labels) == pytest.approx(refit["test"]["top1"])
    refit_metrics = json.loads((config.run_dir / "refit" / "metrics.json").read_text())
    assert refit_metrics["length"] == refit["steps"] == refit_metrics["step"]
    assert list((config.run_dir / "refit" / "train").glob("events.out.tfevents.*"))
    assert not list((config.run_dir / "refit").glob("events.out.tfevents.*"))  # no session: not a run of its own

    # --refit=false exports the chosen checkpoint itself.
    kept = training.train(dataclasses.replace(config, run_name="chosen", refit=False))
    assert "refit" not in kept and kept["exported"]["test"] == kept["selected"]["test"]
    assert not (tmp_path / "runs" / "chosen" / "refit").exists()

    # --restart deletes the refit's files with the rest.
    training.train(dataclasses.replace(config, restart=True, steps=10))
    refit_metrics = json.loads((config.run_dir / "refit" / "metrics.json").read_text())
    assert refit_metrics["length"] == 10


def test_an_interrupted_refit_resumes_and_a_new_length_starts_it_over(tmp_path, monkeypatch, caplog):
    import logging

    from rnn import optimization

    task = _refit_task(tmp_path / "task")
    config = _refit_config(task, tmp_path / "runs", steps=20)
    made = []

    def make_train_step(*args, **kwargs):  # the second train step made is the refit's: stop it after 7 steps
        step = original(*args, **kwargs)
        made.append(step)
        if len(made) != 2:
            return step

        def stop_after_seven(inputs, labels):
            calls.append(1)
            if len(calls) == 7:
                training.STOP_REQUESTED.set()
            return step(inputs, labels)
        return stop_after_seven

    calls, original = [], optimization.make_train_step
    monkeypatch.setattr(optimization, "make_train_step", make_train_step)
    try:
        with pytest.raises(KeyboardInterrupt):
            training.train(config)
    finally:
        training.STOP_REQUESTED.clear()
    assert tf.train.latest_checkpoint(config.run_dir / "refit" / "checkpoints").endswith("ckpt-7")
    assert not (config.run_dir / "model.keras").exists()
    with caplog.at_level(logging.INFO):
        metrics = training.train(config)
    assert "refit/checkpoints/ckpt-7 (step 7)" in caplog.text
    assert metrics["refit"]["steps"] == metrics["selected"]["step"]
    # Resumed with more steps, the validation split may choose anew: the refit is made again for that length.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        longer = training.train(dataclasses.replace(config, steps=40))
    if longer["selected"]["step"] != metrics["selected"]["step"]:
        assert "the refit starts over" in caplog.text
    assert longer["refit"]["steps"] == longer["selected"]["step"]


def test_the_test_split_folder_was_eval_before_and_is_still_ours():
    """The test split's events moved from eval/ to test/ (its name in
    TensorBoard's runs and legends); --restart still deletes an earlier
    version's eval/ events and projector files, and only those."""
    names = ["eval/events.out.tfevents.1796000000.host.42.0.v2", "eval/projector_config.pbtxt",
             "test/events.out.tfevents.1796000000.host.42.0.v2", "refit/test/metadata.tsv",
             "eval/notes.txt", "test/events.out.tfevents.my_copy"]
    ours = {name for name in names if run_dir_lib.OWN_FILES.fullmatch(name)}
    assert ours == set(names[:4])


def test_the_same_seed_repeats_a_run_exactly_and_another_seed_does_not(order_task, tmp_path):
    def losses(run_name, seed):
        metrics = training.train(_config(order_task, tmp_path, steps=30, eval_every=30, run_name=run_name, seed=seed))
        return metrics["selected"]["validation"]["loss"], metrics["refit"]["test"]["loss"]

    first = losses("first", seed=0)
    assert losses("again", seed=0) == first  # the same batches in the same order, bit for bit
    assert losses("other", seed=1) != first
