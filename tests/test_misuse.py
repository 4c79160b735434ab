"""Hardening, round 2 (issue 15): the misuses of a careless or hostile user,
one test per numbered item, each of which failed before the fix."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree

import pytest

from conftest import LITE0, REPO, make_two_class_clips, run, run_cli, started
from extract import dataset, extraction, plan
from features import temporal_order_examples, write_extraction, write_split
from records.inspect import inspect, iterate_videos
from rnn import training

CLASSES = ["class0", "class1", "class2", "class3"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two classes of two short clips, and a file that is not a video."""
    root = make_two_class_clips(tmp_path_factory.mktemp("misuse_clips"), 2)
    (root / "pattern" / "broken.avi").write_bytes(os.urandom(3000))
    return root


def _extract(clips, output, *extra, **options):
    return run_cli("extract", *LITE0, "--videos", clips, "--output_dir", output, "--progress=false", *extra, **options)


def _features(tmp_path, name="features", test=4, train_examples=8):
    """A synthetic extraction (train and test splits) in ``tmp_path / name``."""
    folder = tmp_path / name
    write_extraction(folder, {"train": temporal_order_examples(train_examples, 8, 4),
                              "test": temporal_order_examples(test, 8, 4, seed=1)}, CLASSES, 8)
    return folder


def _train_config(tmp_path, train_pattern, eval_pattern):
    return training.TrainConfig(train_pattern=str(train_pattern), eval_pattern=str(eval_pattern),
                             logdir=str(tmp_path / "runs"), steps=2, show_progress=False)


# 1. Held-out data that is training data.

def test_held_out_data_that_is_training_data_is_refused(tmp_path):
    features = _features(tmp_path)
    cases = {  # (train pattern, eval pattern) -> what the refusal says
        (features / "*.tfrecord", features / "test-*.tfrecord"): "both match",
        (features / "train-*.tfrecord", features / "train-*.tfrecord"): "both match",
    }
    for (train_pattern, eval_pattern), message in cases.items():
        with pytest.raises(training.TrainingError, match=message) as refused:
            training.train(_train_config(tmp_path, train_pattern, eval_pattern))
        assert f"--train_pattern '{features}/train-*.tfrecord'" in str(refused.value)
    # The test split among the training data, held-out data from elsewhere.
    other = _features(tmp_path, "other")
    with pytest.raises(training.TrainingError, match="matches the test split's shards .*test-00000-of-00002"):
        training.train(_train_config(tmp_path, features / "*.tfrecord", other / "test-*.tfrecord"))
    # Two extractions of the same videos: the held-out "test" of the second holds training videos of the first.
    same = tmp_path / "same"
    write_extraction(same, {"test": temporal_order_examples(8, 8, 4)}, CLASSES, 8, ids_as="train")
    with pytest.raises(training.TrainingError, match="8 videos are in both the training and the held-out data"):
        training.train(_train_config(tmp_path, features / "train-*.tfrecord", same / "test-*.tfrecord"))
    assert not (tmp_path / "runs").exists()  # refused before the run folder was made


def test_eval_mode_on_training_shards_says_what_it_scored(tmp_path):
    features = _features(tmp_path)
    training.train(_train_config(tmp_path, features / "train-*.tfrecord", features / "test-*.tfrecord"))
    result = run([sys.executable, "train.py", "--mode", "eval", "--logdir", tmp_path / "runs", "--run_name", "gru",
                  "--eval_pattern", features / "train-*.tfrecord", "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scored"] == "train split (not held-out data)"
    held_out = run([sys.executable, "train.py", "--mode", "eval", "--logdir", tmp_path / "runs", "--run_name",
                    "gru", "--eval_pattern", features / "test-*.tfrecord", "--json"])
    assert json.loads(held_out.stdout)["scored"] == "test split"
    # Issue 35 item 4: a summary like training's; one results file per split
    # scored, none replacing another (a folder of the same name elsewhere included).
    other = _features(tmp_path / "elsewhere")
    summary = run([sys.executable, "train.py", "--mode", "eval", "--logdir", tmp_path / "runs", "--run_name", "gru",
                   "--eval_pattern", other / "test-*.tfrecord"])
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert lines[0] == f"run: {tmp_path / 'runs' / 'gru'}, its exported model"
    assert lines[1].startswith(f"  scored test split of {other / 'test-*.tfrecord'} (4 videos, ")
    assert "top-1" in lines[1]
    results = sorted(path.name for path in (tmp_path / "runs" / "gru").glob("evaluation*.json"))
    assert results == ["evaluation-features-test-2.json", "evaluation-features-test.json",
                       "evaluation-features-train.json"]
    assert lines[2] == f"results: {tmp_path / 'runs' / 'gru' / 'evaluation-features-test-2.json'}"


# 2. A shard replaced by another extraction's shard of the same name.

def test_a_shard_copied_over_from_another_extraction_is_refused_by_name(tmp_path):
    features = _features(tmp_path, train_examples=14)
    other = _features(tmp_path, "other", train_examples=16)
    shard = "train-00000-of-00002.tfrecord"
    shutil.copy(other / shard, features / shard)
    with pytest.raises(training.TrainingError, match=f"{features / shard} is not the shard its extraction wrote: it "
                                                  "has .* bytes where its index .* says .* \\(7 videos\\)"):
        training.train(_train_config(tmp_path, features / "train-*.tfrecord", features / "test-*.tfrecord"))
    summary = inspect(features / "*.tfrecord")
    assert summary["not_as_written"] == [str(features / shard)]
    assert any("SHA-256 differs" in problem for problem in summary["problems"])


def test_the_extractor_refuses_to_resume_over_a_foreign_shard(clips, tmp_path):
    output = tmp_path / "out"
    assert _extract(clips, output, "--videos_per_shard", 1).returncode == 3
    other = tmp_path / "other"
    assert _extract(clips, other, "--videos_per_shard", 1, "--test_fraction", 0).returncode == 3
    shard = json.loads((output / "manifest.json").read_text())["splits"]["train"]["shards"][0]
    foreign = max((path.read_bytes() for path in other.glob("*.tfrecord")), key=len)
    assert len(foreign) != (output / shard).stat().st_size
    (output / shard).write_bytes(foreign)
    manifest = json.loads((output / "manifest.json").read_text())
    (output / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    result = _extract(clips, output, "--videos_per_shard", 1)
    assert result.returncode == 1
    assert f"{output / shard} is not the shard this extraction wrote" in result.stderr
    assert (output / shard).read_bytes() == foreign  # not ours to delete


# 3 and 5. Bounded, finite numbers for every numeric flag of every command.

def _numeric_flags(*command):
    """The float and int flags a command defines itself (absl's --helpxml)."""
    result = run([sys.executable, *command, "--helpxml"])
    tree = xml.etree.ElementTree.fromstring(result.stdout)
    return {flag.findtext("name"): flag.findtext("type") for flag in tree.iter("flag")
            if flag.findtext("key") == "yes" and flag.findtext("type") in ("float", "int")}


COMMANDS = {"extract": ["-m", "extract"], "train": ["train.py"], "predict": ["-m", "predict"]}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_float_flag_refuses_inf_and_nan_in_one_line(name, tmp_path):
    floats = [flag for flag, kind in _numeric_flags(*COMMANDS[name]).items() if kind == "float"]
    assert floats or name == "predict"
    for index, flag in enumerate(floats):
        # train.py imports TensorFlow before it reads its flags: one value per flag there.
        for value in ("inf", "nan", "-inf") if name != "train" else [("inf", "nan")[index % 2]]:
            result = run([sys.executable, *COMMANDS[name], f"--{flag}={value}", "--logdir", tmp_path / "logs"]
                         if name == "train" else [sys.executable, *COMMANDS[name], f"--{flag}={value}",
                                                  "--output_dir", tmp_path / "out"], timeout=120)
            assert result.returncode == 1, (flag, value, result.stderr)
            first, *rest = result.stderr.splitlines()
            assert re.fullmatch(rf"error: --{flag} must be a finite number.*", first), result.stderr
            assert rest == [f"(python {' '.join(COMMANDS[name]).replace('.py', '.py')} --help lists the flags)"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_an_absurd_window_is_refused_before_anything_is_written(clips, tmp_path):
    """--fps 1e9 once made every ffmpeg grow to 11 GB, --seconds 1e12 died in
    numpy after writing a manifest: both are refused up front, with numbers."""
    for window in (("--seconds", "86400"), ("--fps", "1000", "--seconds", "3600")):
        result = _extract(clips, tmp_path / "out", *window, "--decode_workers", 2)
        assert result.returncode == 1
        assert re.match(r"error: --fps \S+ x --seconds \S+ = \d+ frames per video; 8 videos in flight .* more "
                        r"than the budget of [\d.]+ GiB \(25% of this machine's", result.stderr)
        assert not (tmp_path / "out").exists()


def test_a_frame_rate_or_window_ffmpeg_cannot_take_is_refused_with_the_range(clips, tmp_path):
    """Issue 20, item 14: --fps 1e-300 --seconds 1e300 passed the checks,
    then every video failed in ffmpeg ("Invalid duration for option t")."""
    for flag, value, bounds in (("--fps", "1e-300", ">= 0.01 and <= 1000"), ("--fps", "1e9", ">= 0.01 and <= 1000"),
                                ("--seconds", "1e300", ">= 0.01 and <= 86400"),
                                ("--seconds", "0.001", ">= 0.01 and <= 86400")):
        result = _extract(clips, tmp_path / "out", flag, value)
        assert result.returncode == 1
        assert result.stderr.splitlines()[0] == f"error: {flag} must be a finite number {bounds}, got {float(value)}"
        assert not (tmp_path / "out").exists()


# 4. Interrupted while ffmpeg decodes.

def test_sigterm_while_ffmpeg_decodes_stops_at_once_and_leaves_no_decoder(clips, tmp_path):
    """A decoder that would take minutes (a stand-in ffmpeg on PATH that
    sleeps) does not hold the interrupted run: it is killed by its process
    id, and the run exits 130 within seconds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pids = tmp_path / "decoder_pids"
    fake = bin_dir / "ffmpeg"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in *-version*) echo "ffmpeg version stand-in"; exit 0;; esac
        echo $$ >> {pids}
        exec sleep 300
        """))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "extract", *LITE0, "--videos", clips, "--output_dir", tmp_path / "out",
               "--progress=false"]
    with started(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        deadline = time.monotonic() + 120
        while not (pids.exists() and len(pids.read_text().split()) >= 2):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no decoder started within 120 s"
            time.sleep(0.1)
        decoders = [int(pid) for pid in pids.read_text().split()]
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - stopped
    assert process.returncode == 130, stderr
    assert took < 10, f"the run took {took:.1f} s to stop"
    assert "interrupted: finished shards are kept" in stderr
    for pid in decoders:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower(), pid


# 6 is tests/test_training.py::test_restart_deletes_only_what_train_wrote.

# 7. A file where a folder should be.

def test_a_file_where_a_folder_should_be_is_one_sentence_and_nothing_is_written(clips, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    cases = {a_file: f"error: --output_dir {a_file} is a file, not a folder",
             a_file / "sub": f"error: --output_dir {a_file / 'sub'} cannot be a folder: {a_file} is a file"}
    for output, message in cases.items():
        result = _extract(clips, output)
        assert result.returncode == 1 and result.stderr.startswith(message), result.stderr
        assert "Traceback" not in result.stderr
    output = tmp_path / "out"
    (output).mkdir()
    (output / "index").write_text("mine")
    result = _extract(clips, output)
    assert result.returncode == 1
    assert f"error: --output_dir's index folder {output / 'index'} is a file, not a folder" in result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["index"]  # no .lock, no manifest.json
    features = _features(tmp_path)
    result = run([sys.executable, "train.py", "--logdir", a_file, "--train_pattern", features / "train-*.tfrecord",
                  "--eval_pattern", features / "test-*.tfrecord", "--steps", 2])
    assert result.returncode == 1
    assert f"error: --logdir {a_file} is a file, not a folder" in result.stderr and "Traceback" not in result.stderr
    assert a_file.read_text() == "mine"


# 8. A Ray address where nothing answers.

def test_an_unreachable_ray_cluster_is_one_sentence_before_anything_is_written(clips, tmp_path, monkeypatch):
    from extract import ray_runner

    monkeypatch.setattr(ray_runner, "CONNECT_SECONDS", 2)
    output = tmp_path / "out"
    started_at = time.monotonic()
    with pytest.raises(ValueError, match=r"no Ray cluster answers at 127\.0\.0\.1:1 \(tried for 2 s: Connection "
                                         r"refused\)\. Check that 'ray start --head --port=1' runs on 127\.0\.0\.1"):
        extraction.run(dataset.load_videos(clips), output, plan.ExtractConfig(backbone=plan.DEMO_BACKBONE),
                       ray_runner.RayRunner("127.0.0.1:1", show_progress=False))
    assert time.monotonic() - started_at < 10
    assert not output.exists()


# 9. Usage errors first; TensorFlow's internals left out.

def test_usage_errors_come_first_and_damaged_shards_read_plainly(tmp_path):
    result = run([sys.executable, "-m", "extract"])
    assert result.stderr.splitlines() == ["error: --videos is required (or --demo)",
                                          "(python -m extract --help lists the flags)"]
    features = _features(tmp_path)
    shard = features / "test-00000-of-00002.tfrecord"
    content = shard.read_bytes()
    shard.write_bytes(content[:len(content) // 2] + b"\0" * (len(content) - len(content) // 2))  # same size
    result = run([sys.executable, "train.py", "--logdir", tmp_path / "runs", "--steps", 2, "--train_pattern",
                  features / "train-*.tfrecord", "--eval_pattern", features / "test-*.tfrecord"])
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(shard) in error[0] and "corrupted record" in error[0], result.stderr
    assert "function_node" not in result.stderr and "[Op:" not in result.stderr


# 10. A folder given as a pattern; no shards at all.

def test_a_folder_as_a_pattern_and_no_shards_say_what_to_give(tmp_path):
    features = _features(tmp_path)
    with pytest.raises(training.TrainingError, match=f"'{features}' is a folder; give a pattern of its shards, e.g. "
                                                  f"'{features}/train-\\*.tfrecord'"):
        training.train(_train_config(tmp_path, features, features / "test-*.tfrecord"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(training.TrainingError, match=f"holds no shards: extract features first \\(python -m extract "
                                                  f"--videos DIR --output_dir {empty}\\)"):
        training.train(_train_config(tmp_path, empty / "train-*.tfrecord", empty / "test-*.tfrecord"))


# 11. A picture is not a video; an output folder inside the videos.

def test_a_still_image_is_listed_as_failed_and_an_output_inside_the_videos_is_flagged(clips, tmp_path):
    from PIL import Image

    videos = tmp_path / "videos"
    shutil.copytree(clips, videos)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(videos / "bars" / "v_Bars_g09_c01.avi", format="PNG")
    output = videos / "features"
    result = _extract(videos, output)
    assert result.returncode == 3
    assert f"WARNING: --output_dir {output} is inside --videos {videos}" in result.stderr
    errors = dict(line.split("\t")[:2] for line in (output / "errors.tsv").read_text().splitlines()[1:])
    assert errors["bars/v_Bars_g09_c01.avi"] == "a still image (png_pipe), not a video"


# 12. Transient failures are retried; the same broken file is not.

def test_transient_failures_and_changed_files_are_retried_by_the_same_command(clips, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(clips, videos)
    output = tmp_path / "out"
    # A machine so stalled that every decode times out...
    first = _extract(videos, output, "--videos_per_shard", 2, "--decode_timeout", "0.001")
    assert first.returncode == 3
    errors = [line.split("\t") for line in (output / "errors.tsv").read_text().splitlines()]
    assert errors[0] == ["video", "reason", "shard"]
    timed_out = {video for video, reason, _ in errors[1:] if "did not finish within" in reason}
    assert len(timed_out) >= 4
    assert all(shard.endswith(".tfrecord") for _, _, shard in errors[1:])
    # ...then the same command on a machine that keeps up: the timeouts are retried, the broken file is not.
    second = _extract(videos, output, "--videos_per_shard", 2)
    assert second.returncode == 3, second.stderr
    assert (f"retried {len(timed_out)} videos that had failed (a timeout, a read error, or a file that changed "
            f"since): {len(timed_out) - ('pattern/broken.avi' in timed_out)} now written") in second.stdout
    assert "videos: 4 written, 1 failed" in second.stdout
    third = _extract(videos, output, "--videos_per_shard", 2)  # a no-op stays a no-op
    assert "nothing to do" in third.stdout and "retried" not in third.stdout
    # A user replaces the broken download with a good file: the same command retries it.
    shutil.copy(videos / "pattern" / "v_Pattern_g00_c01.avi", videos / "pattern" / "broken.avi")
    fourth = _extract(videos, output, "--videos_per_shard", 2)
    assert fourth.returncode == 0, fourth.stderr
    assert "retried 1 videos" in fourth.stdout and "1 now written, 0 still fail" in fourth.stdout
    ids = [video["video_id"] for video in iterate_videos(str(output / "*.tfrecord"))]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 5  # every video exactly once


# 13. Processes that end with their test.

def test_a_test_that_times_out_kills_the_whole_process_group(tmp_path):
    """The helpers every test uses to start a process: a timeout fails the
    test with a reason, and the child's own children die with it."""
    grandchild = tmp_path / "grandchild"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '300']); open({str(grandchild)!r}, 'w')" \
             f".write(str(p.pid)); time.sleep(300)"
    with pytest.raises(pytest.fail.Exception, match="did not finish within 2 s; it was killed"):
        run([sys.executable, "-c", script], timeout=2)
    time.sleep(0.5)
    pid = int(grandchild.read_text())
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert REPO.is_dir()


def test_split_lists_that_name_no_video_found_say_zero(tmp_path):
    """Issue 34: with no video in any split, the count reads 0 (it was missing)."""
    videos, lists = tmp_path / "videos", tmp_path / "lists"
    make_two_class_clips(videos, per_class=1)
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 bars\n2 pattern\n")
    (lists / "trainlist01.txt").write_text("bars/gone.mp4\n")
    (lists / "testlist01.txt").write_text("pattern/gone.avi\n")
    result = run_cli("extract", *LITE0, "--weights", "none", "--videos", videos, "--splits_dir", lists,
                     "--output_dir", tmp_path / "out", "--progress=false")
    assert "\n0 videos; 2 videos in no split list (ignored)\n" in f"\n{result.stdout}"
    assert "videos: 0 written, 2 failed" in result.stdout


def test_a_resume_on_shards_extracted_again_with_another_split_is_refused(tmp_path):
    """Issue 34 item 3: the run records the videos it trains, validates and
    tests on; a resume on shards that hold other ones is refused, naming the
    change, and --mode eval says when the 'test' split holds trained videos."""
    from records import manifest as manifest_lib

    features = _features(tmp_path)
    config = _train_config(tmp_path, features / "train-*.tfrecord", features / "test-*.tfrecord")
    training.train(config)
    # Extracted again with another split: half the old training videos are now test videos.
    manifest = manifest_lib.read_manifest(features)
    shutil.rmtree(features)
    features.mkdir()
    manifest["splits"] = {"train": write_split(features, "train", temporal_order_examples(4, 8, 4), 8,
                                               ids_as="new"),
                          "test": write_split(features, "test", temporal_order_examples(4, 8, 4, seed=1), 8,
                                              ids_as="train")}
    manifest_lib.write_manifest(features, manifest)
    with pytest.raises(training.TrainingError, match="holds a run on other videos than the shards hold now "
                                                     "\\(its train split gained 4 videos and lost 8 .*its test "
                                                     "split gained 4 videos and lost 4 .*4 of the new test "
                                                     "videos were trained on.*Use --restart"):
        training.train(dataclasses.replace(config, steps=4))
    result = run([sys.executable, "train.py", "--mode", "eval", "--logdir", tmp_path / "runs", "--run_name", "gru",
                  "--eval_pattern", features / "test-*.tfrecord"])
    assert result.returncode == 0, result.stderr
    assert "test split (4 of its 4 videos were trained on: not held-out data)" in result.stdout
    training.train(dataclasses.replace(config, steps=4, restart=True))  # --restart is the way to start over


def test_a_video_in_both_splits_of_one_extraction_says_what_is_wrong(tmp_path):
    """Issue 34 item 2: not "X = X under another path", nor the --eval_pattern
    already given: the extraction put the videos in both splits."""
    from records import manifest as manifest_lib

    features = _features(tmp_path)
    manifest = manifest_lib.read_manifest(features)
    manifest["splits"]["test"] = write_split(features, "test", temporal_order_examples(4, 8, 4, seed=1), 8,
                                             ids_as="train")
    manifest_lib.write_manifest(features, manifest)
    with pytest.raises(training.TrainingError) as refused:
        training.train(_train_config(tmp_path, features / "train-*.tfrecord", features / "test-*.tfrecord"))
    message = str(refused.value)
    assert f"4 videos are in both the train and the test split of {features}" in message
    assert "the extraction put them in both" in message and "under another path" not in message
    assert "--eval_pattern" not in message


def test_reordered_class_names_in_a_manifest_are_caught(tmp_path):
    """Issue 34 item 5: every record carries its label name; a hand-edited
    manifest whose class_names no longer match them is named by records
    inspect and stops train.py (which would otherwise train, and predict
    would label videos with the wrong names)."""
    from records import manifest as manifest_lib

    features = _features(tmp_path)
    manifest = manifest_lib.read_manifest(features)
    manifest["class_names"] = manifest["class_names"][::-1]
    manifest_lib.write_manifest(features, manifest)
    inspected = inspect(features / "*.tfrecord")
    assert any("do not match the records' labels" in problem and "was its class_names list edited or reordered"
               in problem for problem in inspected["problems"])
    result = run([sys.executable, "train.py", "--steps", 2, "--logdir", tmp_path / "runs", "--train_pattern",
                  features / "train-*.tfrecord", "--eval_pattern", features / "test-*.tfrecord"])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "are not the records': label 0 is 'class0' in the records, 'class3' in the manifest"\
        in errors[0], result.stderr


def test_inspect_checks_each_folder_against_its_own_manifest(tmp_path):
    """Issue 34 item 10: a pattern over two healthy extractions reports no damage."""
    from records import manifest as manifest_lib

    _features(tmp_path, "w1")
    manifest = manifest_lib.read_manifest(tmp_path / "w1")
    (tmp_path / "w2").mkdir()
    manifest["splits"] = {split: write_split(tmp_path / "w2", split, temporal_order_examples(8, 8, 4), 8,
                                             ids_as=f"w2{split}") for split in ("train", "test")}
    manifest_lib.write_manifest(tmp_path / "w2", manifest)
    summary = inspect(tmp_path / "w[12]" / "*.tfrecord")
    assert summary["files"] == 8 and summary["examples"] == 28
    # The synthetic features' weights are random, said once; nothing else.
    assert summary["problems"] == ["these features come from RANDOM weights (--weights none): they are meaningless"]


def test_absurd_run_lengths_and_batches_are_one_sentence(tmp_path):
    """Issue 34 items 7 and 8: --steps beyond a billion (an OverflowError in
    the time estimate before) is a usage error with the range; a batch that
    cannot fit in memory (killed by the kernel at 20 GB before) is refused
    with the numbers, before the run folder is made."""
    features = _features(tmp_path)
    for steps in ("99999999999999999999", str(2 ** 63 - 1)):
        result = run([sys.executable, "train.py", "--steps", steps, "--lr_decay", "cosine", "--train_pattern",
                      features / "train-*.tfrecord"])
        assert result.returncode == 1
        assert result.stderr.splitlines()[0] == f"error: --steps must be a finite number > 0 and <= 1e+09, got {steps}"
    with pytest.raises(training.TrainingError, match=r"--batch_size 100000000 x 8 frames x 4 features .* would "
                                                     r"take [\d,.]+ GiB, more than the budget of"):
        training.train(dataclasses.replace(_train_config(tmp_path, features / "train-*.tfrecord",
                                                         features / "test-*.tfrecord"), batch_size=10 ** 8))
    assert not (tmp_path / "runs").exists()
