"""Acceptance of the hardening issue: used as a new user would, with folders of
the user's own files beside and inside the outputs, no command deletes or
alters a file it did not create."""

import hashlib
import os

from conftest import LITE0, run_cli

USER_FILES = {
    "notes.txt": "my notes",
    "features/README.md": "what these features are",
    "features/index/README": "my index notes",
    "features/.draft.partial": "a hidden file of mine",
    "features/results.tsv": "video\tscore\n",
    "tensorboard_logs/README.md": "my runs",
    "tensorboard_logs/docs/thesis.tex": "\\documentclass{article}",
}


def _snapshot(root):
    """Every file and link below ``root``: path -> content digest or link target."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                found[relative] = "-> " + os.readlink(path)
            else:
                with open(path, "rb") as f:
                    found[relative] = hashlib.sha256(f.read()).hexdigest()
    return found


def test_no_command_touches_a_users_files(demo_extraction, tmp_path):
    videos, _, _ = demo_extraction
    for name, content in USER_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    (tmp_path / "features" / "link_to_notes").symlink_to(tmp_path / "notes.txt")
    user_before = _snapshot(tmp_path)  # only the user's files so far
    videos_before = _snapshot(videos)
    features, logs = tmp_path / "features", tmp_path / "tensorboard_logs"
    extract = ("extract", *LITE0, "--videos", videos, "--output_dir", features, "--videos_per_shard", 5,
               "--progress=false")
    training = ("train", "--steps", 20, "--units", 32, "--logdir", logs, "--train_pattern",
                features / "train-*.tfrecord", "--eval_pattern", features / "test-*.tfrecord", "--progress=false")

    assert run_cli(*extract).returncode == 0
    assert run_cli(*extract, "--overwrite", "--fps", 4).returncode == 0
    assert run_cli("records", "inspect", features / "*.tfrecord").returncode == 0
    assert run_cli(*training).returncode == 0
    run = logs / "gru"
    (run / "NOTES.md").write_text("what I tried")
    (run / "train" / "mine.txt").write_text("mine")
    user_before.update({"tensorboard_logs/gru/NOTES.md": _snapshot(run)["NOTES.md"],
                        "tensorboard_logs/gru/train/mine.txt": _snapshot(run)["train/mine.txt"]})
    assert run_cli(*training, "--restart").returncode == 0
    assert run_cli("train", "--mode", "eval", "--logdir", logs, "--run_name", "gru", "--eval_pattern",
                   features / "test-*.tfrecord").returncode == 0
    for bad_name in ("..", "docs", "."):
        refused = run_cli(*training, "--run_name", bad_name, "--restart")
        assert refused.returncode == 1, (bad_name, refused.stderr)
    held_out = next(v for v in _snapshot(videos) if "_g02_" in v or "_g03_" in v)
    assert run_cli("predict", "--run", run, videos / held_out).returncode == 0

    after = _snapshot(tmp_path)
    assert {name: after.get(name) for name in user_before} == user_before
    assert _snapshot(videos) == videos_before
