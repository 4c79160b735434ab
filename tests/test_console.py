"""What a practitioner reads while a job runs and when it ends (issue 16):
rates and times left that follow the recent pace, and the real wall time."""

import logging
import re
import sys
import time

import pytest

from common import console
from conftest import run


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rate_and_time_left_follow_the_recent_pace_after_a_stall(caplog):
    """After a long stall the machine is fast again: the log line must say
    so (the average since the start would say 0.2 videos/s and hours left)."""
    clock = _Clock()
    caplog.set_level(logging.INFO)
    progress = console.Progress(1000, "video", "extracting", show_bar=False, log_seconds=1e9, work_unit="frames",
                                clock=clock)
    for _ in range(20):  # 2 videos (100 frames) a second
        clock.now += 0.5
        progress.update(1, work=50)
    clock.now += 3600  # an hour of nothing
    progress.log_line()
    assert "0.0 frames/s" in caplog.text and "ETA unknown" in caplog.text
    caplog.clear()
    for _ in range(120):  # then 2 videos a second again, for a minute
        clock.now += 0.5
        progress.update(1, work=50)
    progress.log_line()
    rate = float(re.search(r"([\d.]+) frames/s", caplog.text).group(1))
    assert 95 <= rate <= 105, caplog.text
    eta = re.search(r"ETA (\d+):(\d\d):(\d\d)", caplog.text).groups()
    seconds_left = int(eta[0]) * 3600 + int(eta[1]) * 60 + int(eta[2])
    assert abs(seconds_left - (1000 - 140) / 2) <= 10, caplog.text  # 860 videos at 2 a second


def test_recent_rate_counts_idle_time_in_its_window():
    rate = console.RecentRate(window=10, now=0)
    rate.add(100, now=1)
    assert rate.per_second(now=1) == 100
    assert rate.per_second(now=5) == 20  # 100 in the 5 s since the start
    assert rate.per_second(now=100) == 0  # nothing in the last 10 s


def test_the_summary_gives_the_commands_real_wall_time(demo_extraction):
    """A re-run that does nothing still takes Python's start-up; the summary
    says so instead of "(0.0 s)", and the first run's wall time counts its
    start-up too."""
    videos, features, first = demo_extraction
    started = time.monotonic()
    again = run([sys.executable, "-m", "extract", "--demo", "--videos", videos, "--output_dir", features,
                 "--progress=false"])
    measured = time.monotonic() - started
    printed = float(re.search(r"nothing to do, all \d+ shards were done \(([\d.]+) s wall time\)", again.stdout)
                    .group(1))
    assert 0.5 * measured <= printed + 0.05 <= measured + 0.1, (printed, measured)
    wall = float(re.search(r"([\d.]+) s wall time including start-up", first.stdout).group(1))
    extracting = float(re.search(r"frames/s decoding \+ CNN \(([\d.]+) s\)", first.stdout).group(1))
    assert wall > extracting + 1.0  # importing TensorFlow and loading the CNN alone take more than a second


@pytest.mark.parametrize("command", [
    ("train.py", "--help"), ("train.py", "--steps=x"), ("train.py", "--nope"),
    ("-m", "extract", "--help"), ("-m", "extract", "--fps", "0"),
    ("-m", "predict", "--help"), ("-m", "predict", "--run", "no/such/run", "clip.avi"),
    ("-m", "predict", "--run", ".", "no_such_clip.avi"),
])
def test_help_and_usage_errors_answer_before_tensorflow_loads(command):
    """--help exits 0 and a usage error or a missing path exits 1, both
    without importing TensorFlow (what made them take 17-31 s)."""
    result = run([sys.executable, "-X", "importtime", *command])
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert result.returncode == (0 if "--help" in command else 1), result.stderr[-2000:]
    assert "tensorflow" not in imported and "keras" not in imported
    if "--help" in command:
        assert "flags:" in result.stdout and "rnn.training" not in result.stdout


def test_a_mistyped_shard_folder_names_the_nearest_one_before_tensorflow_loads(tmp_path):
    (tmp_path / "features").mkdir()
    result = run([sys.executable, "-X", "importtime", "train.py", "--train_pattern",
                  str(tmp_path / "featurs" / "train-*.tfrecord"), "--logdir", str(tmp_path / "runs")])
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert result.returncode == 1 and "tensorflow" not in imported
    assert f"there is no folder {tmp_path / 'featurs'} (did you mean {tmp_path / 'features'}/?)" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_eval_mode_checks_its_own_shards_not_the_training_ones(tmp_path):
    # --mode eval reads only --eval_pattern: default training shards that do
    # not exist must not stop it, and a mistyped --eval_pattern is named.
    (tmp_path / "features").mkdir()
    result = run([sys.executable, "train.py", "--mode", "eval", "--logdir", str(tmp_path / "runs"),
                  "--train_pattern", str(tmp_path / "nowhere" / "train-*.tfrecord"),
                  "--eval_pattern", str(tmp_path / "featurs" / "test-*.tfrecord")])
    assert result.returncode == 1
    assert "--eval_pattern:" in result.stderr and "--train_pattern" not in result.stderr
    assert f"(did you mean {tmp_path / 'features'}/?)" in result.stderr
