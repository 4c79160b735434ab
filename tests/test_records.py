"""Record schema round trip and the all-or-nothing shard writer."""

import glob

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
    assert index["errors"] == [{"video_id": "a/2.mp4", "reason": "empty file (0 bytes)"}]
    summary = inspect(tmp_path / "*.tfrecord", per_video=True)
    assert summary["examples"] == 1 and summary["videos"] == {"a/1.mp4": 2}
    assert (summary["feature_dim"], summary["max_frames"], summary["dtype"]) == (4, 3, "float32")


def test_shard_without_index_is_not_done(tmp_path):
    name = writer.shard_name("test", 0, 1)
    writer.ShardWriter(tmp_path, name).commit()
    writer.index_path(tmp_path, name).unlink()  # a shard file alone (copied by hand, say)
    assert writer.read_committed_index(tmp_path, name) is None


def test_inspect_without_matches():
    with pytest.raises(ValueError, match="no files match"):
        inspect("/nonexistent/*.tfrecord")
