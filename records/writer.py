"""Shard files that are either complete or invisible.

A shard is written under a hidden temporary name (``.NAME.ATTEMPT.partial``,
which no ``*.tfrecord`` pattern matches; unique per attempt, so that two
attempts at one shard never write into the same file). ``commit`` first stores the shard's index
(which videos it holds and which of its videos failed) in
``index/NAME.json``, then renames the shard into place. A shard counts as
done only when both exist, so a process killed at any moment leaves either
a finished shard or one that the next run writes again from scratch.
"""

import contextlib
import glob
import logging
import os
import pathlib
import uuid

from records import files

INDEX_DIR = "index"
log = logging.getLogger(__name__)


def shard_name(split, index, count):
    """``train-00003-of-00008.tfrecord``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def index_path(output_dir, name):
    return pathlib.Path(output_dir) / INDEX_DIR / f"{name}.json"


def read_committed_index(output_dir, name):
    """Returns the index of a committed shard, or None if the shard is not done.

    An index that cannot be parsed (edited, or damaged on disk: indexes are
    written atomically) makes the shard count as not done, so that it is
    extracted again; a warning names the file.
    """
    index = index_path(output_dir, name)
    if not (pathlib.Path(output_dir) / name).exists() or not index.exists():
        return None
    try:
        stored = files.read_json(index, f"shard {name} will be extracted again")
    except files.UnreadableFile as e:
        log.warning("%s", e)
        return None
    if not (isinstance(stored, dict) and {"shard", "videos", "errors"} <= stored.keys()):
        log.warning("%s is not a shard index of python -m extract; shard %s will be extracted again", index, name)
        return None
    return stored


def partial_files(output_dir, name):
    """Leftovers of unfinished attempts at shard ``name``."""
    pattern = os.path.join(glob.escape(str(output_dir)), f".{glob.escape(name)}.*.partial")
    return [pathlib.Path(path) for path in glob.glob(pattern)]


def discard(output_dir, name):
    """Removes every trace of shard ``name`` (finished or not)."""
    output_dir = pathlib.Path(output_dir)
    for path in (output_dir / name, index_path(output_dir, name), *partial_files(output_dir, name)):
        path.unlink(missing_ok=True)


class ShardWriter:
    """Writes one shard of serialized examples.

    Args:
      output_dir: folder of the shard.
      name: final file name, from ``shard_name``.
    """

    def __init__(self, output_dir, name):
        import tensorflow as tf

        self.output_dir = pathlib.Path(output_dir)
        self.name = name
        self._partial = files.partial_path(self.output_dir / name, uuid.uuid4().hex[:12])
        self._writer = tf.io.TFRecordWriter(str(self._partial))
        self.videos = []
        self.errors = []

    def write(self, serialized, video_id, label, num_frames, warning=None):
        """Appends one serialized example; ``warning`` notes a video that
        decoded with errors but was kept."""
        self._writer.write(serialized)
        entry = {"video_id": video_id, "label": label, "num_frames": int(num_frames)}
        if warning:
            entry["warning"] = warning
        self.videos.append(entry)

    def record_error(self, video_id, reason):
        """Notes a video of this shard that could not be extracted."""
        self.errors.append({"video_id": video_id, "reason": reason})

    def commit(self):
        """Makes the shard visible under its final name, with its index.

        Returns:
          The index dict (also stored in ``index/NAME.json``).
        """
        self._writer.close()
        with open(self._partial, "rb") as f:
            os.fsync(f.fileno())
        index = {"shard": self.name, "videos": self.videos, "errors": self.errors}
        index_file = index_path(self.output_dir, self.name)
        index_file.parent.mkdir(exist_ok=True)
        files.write_json_atomic(index_file, index)
        os.replace(self._partial, self.output_dir / self.name)
        return index

    def abandon(self):
        """Closes and deletes the unfinished shard (the attempt failed)."""
        with contextlib.suppress(Exception):  # closing flushes, which fails again on a full disk
            self._writer.close()
        self._partial.unlink(missing_ok=True)
