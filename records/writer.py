"""Shard files that are either complete or invisible.

A shard counts as done only when both the shard file and its index
(``index/NAME.json``: which videos it holds and which of its videos failed)
exist, and each of them appears whole or not at all:

- on a local or shared POSIX disk, the shard is written under a hidden
  temporary name beside it (``.NAME.ATTEMPT.partial``, which no
  ``*.tfrecord`` pattern matches; unique per attempt, so that two attempts
  at one shard never write into the same file); ``commit`` stores the index,
  then renames the shard into place;
- in object storage (``gs://``...), which has no rename, the shard is
  written to a local temporary file; ``commit`` uploads it to its final name
  (an object appears only when its upload completes), then stores the index.

A process killed at any moment leaves either a finished shard or one that
the next run writes again from scratch.

The index also says what identifies the shard's content (``records``,
``bytes``, ``sha256``): readers check the size of every shard cheaply before
they start, ``python -m records inspect`` the records and the checksum, so
that a shard copied over from another extraction is refused by name rather
than read as this one's.
"""

import contextlib
import logging
import os
import uuid

from records import files

INDEX_DIR = "index"
log = logging.getLogger(__name__)


def shard_name(split, index, count):
    """``train-00003-of-00008.tfrecord``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def index_path(output_dir, name):
    return files.join(output_dir, INDEX_DIR, f"{name}.json")


def read_committed_index(output_dir, name):
    """Returns the index of a committed shard, or None if the shard is not done.

    An index that cannot be parsed (edited, or damaged on disk: indexes are
    written atomically) makes the shard count as not done, so that it is
    extracted again; a warning names the file.
    """
    index = index_path(output_dir, name)
    if not files.exists(files.join(output_dir, name)):
        return None
    try:
        stored = files.read_json(index, f"shard {name} will be extracted again")
    except files.UnreadableFile as e:
        log.warning("%s", e)
        return None
    if stored is None:
        return None
    if not (isinstance(stored, dict) and {"shard", "videos", "errors"} <= stored.keys()):
        log.warning("%s is not a shard index of python -m extract; shard %s will be extracted again", index, name)
        return None
    return stored


def content_mismatch(output_dir, name, index):
    """Why the shard file ``name`` is not the one ``index`` describes (its
    size differs), or None. Indexes of older versions say nothing to check."""
    if "bytes" not in index:
        return None
    size = files.size(files.join(output_dir, name))
    if size != index["bytes"]:
        return (f"it has {size} bytes where its index ({INDEX_DIR}/{name}.json) says {index['bytes']} "
                f"({index['records']} videos)")
    return None


def partial_files(output_dir, name):
    """Leftovers (beside the shard, on a local disk) of unfinished attempts at shard ``name``."""
    if files.is_remote(output_dir):
        return []
    return files.matching(output_dir, f".{files.escape(name)}.*.partial")


def discard(output_dir, name):
    """Removes every trace of shard ``name`` (finished or not)."""
    for path in (files.join(output_dir, name), index_path(output_dir, name), *partial_files(output_dir, name)):
        files.remove(path)


class ShardWriter:
    """Writes one shard of serialized examples.

    Args:
      output_dir: folder of the shard (local path or object-storage URL).
      name: final file name, from ``shard_name``.
    """

    def __init__(self, output_dir, name):
        import tensorflow as tf

        self.output_dir = str(output_dir)
        self.name = name
        self._final = files.join(self.output_dir, name)
        self._partial = files.scratch_file(self._final, uuid.uuid4().hex[:12])
        self._writer = tf.io.TFRecordWriter(self._partial)
        self.videos = []
        self.errors = []

    def write(self, serialized, video_id, label, num_frames, warning=None, group=None, content=None):
        """Appends one serialized example; ``warning`` notes a video that
        decoded with errors but was kept, ``group`` the video's group
        (``records.groups``; readers derive it from the id when absent),
        ``content`` its file's ``files.content_fingerprint`` (which tells
        the same video under another path)."""
        self._writer.write(serialized)
        entry = {"video_id": video_id, "label": label, "num_frames": int(num_frames)}
        if group is not None:
            entry["group"] = group
        if content is not None:
            entry["content"] = content
        if warning:
            entry["warning"] = warning
        self.videos.append(entry)

    def record_error(self, video_id, reason, transient=False, file_state=None):
        """Notes a video of this shard that could not be extracted: why,
        whether the failure may pass (a timeout...), and the state of its file
        then (``{"size", "mtime_ns"}`` or None), so that a later run retries
        it if the file changes."""
        self.errors.append({"video_id": video_id, "reason": reason, "transient": bool(transient),
                            "file": file_state})

    def commit(self):
        """Makes the shard visible under its final name, with its index.

        Returns:
          The index dict (also stored in ``index/NAME.json``).
        """
        self._writer.close()
        with open(self._partial, "rb") as f:
            os.fsync(f.fileno())
        index = {"shard": self.name, "records": len(self.videos), "bytes": os.path.getsize(self._partial),
                 "sha256": files.sha256(self._partial), "videos": self.videos, "errors": self.errors}
        index_file = index_path(self.output_dir, self.name)
        files.makedirs(files.dirname(index_file))
        if files.is_remote(self.output_dir):
            files.upload(self._partial, self._final)
            files.write_json_atomic(index_file, index)
        else:
            files.write_json_atomic(index_file, index)
            files.upload(self._partial, self._final)
        return index

    def abandon(self):
        """Closes and deletes the unfinished shard (the attempt failed)."""
        with contextlib.suppress(Exception):  # closing flushes, which fails again on a full disk
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._partial)
