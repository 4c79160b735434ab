"""Record schema round trip and the all-or-nothing shard writer."""

import glob
import hashlib
import os

import numpy as np
import pytest

from records import schema, writer
from records.inspect import inspect


@pytest.mark.parametrize("dtype, tolerance", [("float32", 0), ("float16", 1e-2)])
def test_round_trip_pads_with_zeros(dtype, tolerance):
    features = np.random.default_rng(0).normal(size=(7, 16)).astype(np.float32)
    serialized = schema.encode_video("Class/vidéo 1.avi", 3, "Class", features, max_frames=10, fps=5.0, dtype=dtype)
    video = schema.decode_video(serialized)
    assert video[schema.VIDEO_ID] == "Class/vidéo 1.avi"
    assert (video[schema.LABEL], video[schema.LABEL_NAME], video[schema.NUM_FRAMES]) == (3, "Class", 7)
    assert video[schema.FPS] == 5.0 and video["dtype"] == dtype
    assert video[schema.FEATURES].shape == (10, 16)
    np.testing.assert_allclose(video[schema.FEATURES][:7], features, atol=tolerance, rtol=tolerance)
    assert not video[schema.FEATURES][7:].any()


def test_float16_records_are_about_half_the_size():
    features = np.ones((50, 1280), np.float32)
    full = schema.encode_video("a", 0, "a", features, 50, 5.0, "float32")
    half = schema.encode_video("a", 0, "a", features, 50, 5.0, "float16")
    assert 0.45 < len(half) / len(full) < 0.55


def test_encode_rejects_bad_lengths_and_dtypes():
    with pytest.raises(ValueError, match="frames"):
        schema.encode_video("a", 0, "a", np.ones((11, 4), np.float32), 10, 5.0, "float32")
    with pytest.raises(ValueError, match="frames"):
        schema.encode_video("a", 0, "a", np.ones((0, 4), np.float32), 10, 5.0, "float32")
    with pytest.raises(ValueError, match="dtype"):
        schema.encode_video("a", 0, "a", np.ones((1, 4), np.float32), 10, 5.0, "bfloat16")


def test_shard_is_invisible_until_committed(tmp_path):
    shard = writer.ShardWriter(tmp_path, writer.shard_name("train", 0, 2))
    shard.write(schema.encode_video("a/1.mp4", 0, "a", np.ones((2, 4), np.float32), 3, 5.0, "float32"),
                "a/1.mp4", 0, 2)
    shard.record_error("a/2.mp4", "empty file (0 bytes)")
    assert glob.glob(str(tmp_path / "*.tfrecord")) == []
    assert writer.read_committed_index(tmp_path, "train-00000-of-00002.tfrecord") is None

    index = shard.commit()
    assert glob.glob(str(tmp_path / "*.tfrecord")) == [str(tmp_path / "train-00000-of-00002.tfrecord")]
    assert writer.read_committed_index(tmp_path, "train-00000-of-00002.tfrecord") == index
    assert index["errors"] == [{"video_id": "a/2.mp4", "reason": "empty file (0 bytes)", "transient": False,
                                "file": None}]
    content = (tmp_path / "train-00000-of-00002.tfrecord").read_bytes()
    assert (index["records"], index["bytes"]) == (1, len(content))
    assert index["sha256"] == hashlib.sha256(content).hexdigest()
    summary = inspect(tmp_path / "*.tfrecord", per_video=True)
    assert summary["examples"] == 1 and summary["videos"] == {"a/1.mp4": 2}
    assert (summary["feature_dim"], summary["max_frames"], summary["dtype"]) == (4, 3, "float32")


def test_shard_without_index_is_not_done(tmp_path):
    name = writer.shard_name("test", 0, 1)
    writer.ShardWriter(tmp_path, name).commit()
    os.unlink(writer.index_path(tmp_path, name))  # a shard file alone (copied by hand, say)
    assert writer.read_committed_index(tmp_path, name) is None


def test_inspect_without_matches():
    with pytest.raises(ValueError, match="no files match"):
        inspect("/nonexistent/*.tfrecord")


def test_inspect_reports_duplicates_damage_strays_and_random_weights(tmp_path):
    """Hardening 5, 7, 15: records inspect names what is wrong and exits 1."""
    import json
    import shutil

    from conftest import run_cli
    from features import temporal_order_examples, write_extraction

    folder = tmp_path / "features"
    write_extraction(folder, {"train": temporal_order_examples(6, 8, 4)}, ["class0", "class1", "class2", "class3"], 8)
    clean = run_cli("records", "inspect", folder / "*.tfrecord")
    assert clean.returncode == 1  # the synthetic shards say --weights none
    assert json.loads(clean.stdout)["problems"] == [
        "these features come from RANDOM weights (--weights none): they are meaningless"]

    # A copy of a shard under another name: its videos now occur twice, and the manifest does not list it.
    shutil.copy(folder / "train-00000-of-00002.tfrecord", folder / "train-00000-of-00001.tfrecord")
    data = bytearray((folder / "train-00001-of-00002.tfrecord").read_bytes())
    (folder / "train-00001-of-00002.tfrecord").write_bytes(bytes(data[:-7]))  # cut short
    result = run_cli("records", "inspect", folder / "*.tfrecord")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["duplicate_video_ids"] == {f"{name}/train_{i}.avi": 2 for i, name in
                                              [(0, "class0"), (2, "class2"), (4, "class0")]}
    assert list(summary["damaged_files"]) == [str(folder / "train-00001-of-00002.tfrecord")]
    assert summary["not_in_manifest"] == ["train-00000-of-00001.tfrecord"]
    assert "3 video ids occur more than once" in result.stderr
    assert "train-00001-of-00002.tfrecord is damaged or cut short" in result.stderr


def test_records_command_line_names_what_is_wrong_before_tensorflow_loads(tmp_path):
    """Issue 35 item 8: a mistyped command or option is named; a folder given
    for a pattern is said at once (it took 7.6 s, TensorFlow loading first)."""
    from conftest import run_cli

    result = run_cli("records", "inspct", tmp_path / "*.tfrecord")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown command 'inspct'; the command is "
                                                               "inspect")
    result = run_cli("records", "inspect", "--vidoes", tmp_path / "*.tfrecord")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown option --vidoes")
    result = run_cli("records", "inspect", f"{tmp_path}/", env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 1 and "is a folder; give a pattern of its shards" in result.stderr
    assert "tensorflow" not in result.stderr  # the import log lists no TensorFlow module
