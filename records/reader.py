"""The training input pipeline: shards -> batches of padded feature sequences.

An asynchronous ``tf.data`` pipeline, in the order the tf.data performance
guide recommends:

  list shards -> (shuffle shards) -> interleave several files in parallel ->
  (shuffle examples, repeat) -> batch serialized protos -> parse whole
  batches in parallel (one vectorized parse per batch beats one per example)
  -> prefetch

so the CPU prepares the next batches while the model works on the current one.
Each element is ``({"features": [B, T, D], "num_frames": [B]}, label [B])``
(plus ``{"video_id": [B], "thumbnail": [B]}`` on request; a thumbnail is
empty for shards written before thumbnails were stored).

``open_shards`` first checks the files a pattern matches against their
extraction's manifest, so that a stray or missing shard is refused by name
rather than silently doubling or dropping videos.
"""

import dataclasses
import os
import shlex

from common.console import a_few, tensorflow_error_text
from records import files as files_lib
from records import manifest as manifest_lib
from records import groups, schema, writer


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What a model expects of the records (from the manifest of its training data)."""

    feature_dim: int
    max_frames: int
    num_classes: int
    # The class names in label order: every record's label name is checked
    # against them (a hand-edited manifest would otherwise train and
    # predict under the wrong names); () checks nothing.
    class_names: tuple = ()

    @classmethod
    def from_manifest(cls, manifest):
        return cls(manifest["feature_dim"], manifest["max_frames"], len(manifest["class_names"]),
                   tuple(manifest["class_names"]))


class NoShards(ValueError):
    """No file matches a pattern."""


def list_files(pattern):
    """Sorted files matching a glob pattern.

    Raises:
      NoShards: none does (the message says what to give instead: a folder's
        shards, or an extraction first).
    """
    pattern = str(pattern)
    local = not files_lib.is_remote(pattern)
    folder = files_lib.dirname(pattern) or "."
    if files_lib.has_glob_characters(folder) and (os.path.isdir(folder) if local else files_lib.exists(folder)):
        # A folder whose name holds [, * or ? is that folder (only the file
        # name is a pattern): globbing it would read another folder's shards.
        matches = files_lib.matching(folder, files_lib.basename(pattern))
    else:
        matches = files_lib.glob(pattern)
    files = [path for path in matches if not (local and os.path.isdir(path))]
    if files:
        return files
    if local and os.path.isdir(pattern):
        example = files_lib.join(pattern, "train-*.tfrecord")
        raise NoShards(f"{pattern!r} is a folder; give a pattern of its shards, e.g. '{example}'")
    if local and not os.path.isdir(folder):
        raise NoShards(f"no files match {pattern!r}: there is no folder {folder}{_nearest_folder(folder)}")
    name = files_lib.basename(pattern)
    if files_lib.has_glob_characters(name) and files_lib.exists(files_lib.join(folder, name)):
        raise NoShards(f"no files match {pattern!r}: [, ], * and ? are pattern characters, so it does not name the "
                       f"file {name} itself; to name that file, escape them: "
                       f"{files_lib.join(folder, files_lib.escape(name))!r}")
    shards = files_lib.matching(folder, "*.tfrecord")
    if not shards:
        raise NoShards(f"no files match {pattern!r}, and {folder} holds no shards: extract features first "
                       f"(python -m extract --videos DIR --output_dir {shlex.quote(folder)})")
    raise NoShards(f"no files match {pattern!r}; {folder} holds {a_few(files_lib.basename(path) for path in shards)}")


def _nearest_folder(folder):
    """``" (did you mean features/?)"`` for the existing folder beside a
    missing one whose name is closest, or ""."""
    import difflib

    parent, name = os.path.split(os.path.normpath(folder))
    parent = parent or "."
    if not os.path.isdir(parent):
        return ""
    siblings = [entry for entry in os.listdir(parent) if os.path.isdir(os.path.join(parent, entry))]
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    return f" (did you mean {os.path.join(os.path.dirname(folder), close[0])}/?)" if close else ""


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The shards a pattern matches, checked against their extraction's manifest.

    Attributes:
      pattern: the glob pattern.
      folder: the extraction's output folder.
      manifest: its manifest.
      files: the matched shard files, sorted.
      splits: the splits they make up, each whole.
      indexes: shard file name -> its index (which videos it holds).
    """

    pattern: str
    folder: str
    manifest: dict
    files: list
    splits: list
    indexes: dict

    @property
    def videos(self):
        return sum(self.manifest["splits"][split]["videos"] for split in self.splits)

    def video_ids(self):
        """The ids of the videos these shards hold (from their indexes)."""
        return {video["video_id"] for index in self.indexes.values() for video in index["videos"]}

    def videos_by_group(self):
        """``{group: [(video_id, label), ...]}`` of the videos these shards
        hold: the groups the extractor recorded (``records.groups``), or,
        in shards written before it recorded them, derived from the ids."""
        class_names = self.manifest["class_names"]
        by_group = {}
        for index in self.indexes.values():
            for video in index["videos"]:
                group = video.get("group") or groups.group_of(video["video_id"], class_names[video["label"]])
                by_group.setdefault(group, []).append((video["video_id"], video["label"]))
        return by_group

    @property
    def spec(self):
        return FeatureSpec.from_manifest(self.manifest)


def open_shards(pattern):
    """Finds the shards matching ``pattern`` and checks them against the manifest
    of their folder: every file must be a shard the manifest lists, and the
    files must make up whole splits (a shard of a second extraction in the same
    folder would otherwise double some videos silently, a deleted one drop
    them).

    Raises:
      NoShards: no file matches.
      ValueError: the files span several folders; the folder has no complete,
        readable manifest; a matched file that the manifest does not list,
        or that is not the file its extraction wrote (another size than its
        index says: another extraction's shard copied over it); a listed
        shard of a matched split that is missing.
    """
    files = list_files(pattern)
    folders = {files_lib.dirname(f) for f in files}
    if len(folders) != 1:
        raise ValueError(f"{pattern!r} matches shards in {len(folders)} folders; use one extraction's folder")
    folder = folders.pop()
    manifest = manifest_lib.read_manifest(folder)
    if manifest is None:
        raise ValueError(f"{folder} has no {manifest_lib.MANIFEST_NAME}; was it written by python -m extract?")
    if not manifest.get("complete"):
        raise ValueError(f"the extraction in {folder} is not finished (manifest says complete: false); "
                         "run the same python -m extract command again to complete it")
    split_of = {name: split for split, info in manifest["splits"].items() for name in info["shards"]}
    matched = {files_lib.basename(f) for f in files}
    foreign = sorted(matched - split_of.keys())
    if foreign:
        raise ValueError(f"{pattern!r} matches {len(foreign)} files that {manifest_lib.manifest_path(folder)} does "
                         f"not list: {a_few(foreign)} (left by another extraction?). Reading them would count "
                         f"some videos twice: move them out of {folder}, or narrow the pattern.")
    splits = sorted({split_of[name] for name in matched})
    for split in splits:
        missing = [name for name in manifest["splits"][split]["shards"] if name not in matched]
        gone = [name for name in missing if not files_lib.exists(files_lib.join(folder, name))]
        if gone:
            raise ValueError(f"{len(gone)} shards of the {split!r} split that {manifest_lib.manifest_path(folder)} "
                             f"lists are missing: {a_few(gone)}. Run the same python -m extract command again "
                             "to extract them anew.")
        if missing:
            raise ValueError(f"{pattern!r} matches {len(matched)} of the {split!r} split's shards; use a pattern "
                             f"that matches all of them, e.g. '{files_lib.join(folder, split)}-*.tfrecord'")
    indexes = {}
    for name in sorted(matched):
        index = writer.read_committed_index(folder, name)
        mismatch = writer.content_mismatch(folder, name, index) if index else "it has no readable index"
        if mismatch:
            raise ValueError(f"{files_lib.join(folder, name)} is not the shard its extraction wrote: {mismatch}. "
                             "Was another extraction's shard copied over it? Move it away and run the same "
                             "python -m extract command again to extract it anew.")
        indexes[name] = index
    return ShardSet(str(pattern), folder, manifest, files, splits, indexes)


def first_label_names(shards):
    """The ``(label, label name)`` of the first record of each of ``shards``'
    files, where it disagrees with their manifest's class names: a cheap
    check, at start, that the manifest's class list is the records' (the
    input pipeline checks every record)."""
    import tensorflow as tf

    class_names = shards.manifest["class_names"]
    disagree = []
    for file in shards.files:
        for serialized in tf.data.TFRecordDataset([file]).take(1):
            context, _ = tf.io.parse_single_sequence_example(serialized, context_features={
                schema.LABEL: tf.io.FixedLenFeature([], tf.int64),
                schema.LABEL_NAME: tf.io.FixedLenFeature([], tf.string, default_value="")})
            label, name = int(context[schema.LABEL]), context[schema.LABEL_NAME].numpy().decode("utf-8")
            if name and not (0 <= label < len(class_names) and class_names[label] == name):
                disagree.append((label, name))
    return disagree


def parse_batch(serialized, spec, dtype):
    """Parses a batch of serialized SequenceExamples.

    Args:
      serialized: string tensor ``[B]``.
      spec: ``FeatureSpec``.
      dtype: how the values are stored, ``"float32"`` or ``"float16"``.

    Returns:
      ``({"features": float32 [B, T, D], "num_frames": int32 [B]}, label int32 [B],
      {"video_id": string [B], "thumbnail": string [B] (JPEG, or empty)})``.
    """
    import tensorflow as tf

    schema.check_dtype(dtype)
    if dtype == "float32":
        frame_feature = tf.io.FixedLenSequenceFeature([spec.feature_dim], tf.float32)
    else:
        frame_feature = tf.io.FixedLenSequenceFeature([], tf.string)
    context, sequences, _ = tf.io.parse_sequence_example(
        serialized,
        context_features={
            schema.VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
            schema.THUMBNAIL: tf.io.FixedLenFeature([], tf.string, default_value=""),
            schema.LABEL: tf.io.FixedLenFeature([], tf.int64),
            schema.LABEL_NAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
            schema.NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        },
        sequence_features={schema.FEATURES: frame_feature},
    )
    features = sequences[schema.FEATURES]
    if dtype == "float16":
        features = tf.cast(tf.io.decode_raw(features, tf.float16, little_endian=True), tf.float32)
    features = tf.ensure_shape(features, [None, spec.max_frames, spec.feature_dim])
    label = tf.cast(context[schema.LABEL], tf.int32)
    checks = [tf.debugging.assert_less(label, spec.num_classes,
                                       message=f"label outside the {spec.num_classes} classes of the model"),
              tf.debugging.assert_non_negative(label, message="negative label")]
    if spec.class_names:
        with tf.control_dependencies(checks):
            expected = tf.gather(tf.constant(spec.class_names), label)
        recorded = context[schema.LABEL_NAME]
        checks.append(tf.debugging.Assert(
            tf.reduce_all((recorded == expected) | (recorded == "")),
            ["the label names in the records are not the class names the manifest gives their labels (was its "
             "class_names list edited or reordered? python -m records inspect names them); in the records:",
             recorded, "in the manifest:", expected], summarize=3))
    with tf.control_dependencies(checks):
        label = tf.identity(label)
    inputs = {"features": features, "num_frames": tf.cast(context[schema.NUM_FRAMES], tf.int32)}
    return inputs, label, {key: context[key] for key in (schema.VIDEO_ID, schema.THUMBNAIL)}


def make_dataset(files, spec, dtype, batch_size, training, seed=None, with_details=False,
                 parallel_files=8, shuffle_buffer=1024, only=None, leave_out=None, deterministic=True):
    """Builds the input pipeline over shard files.

    Args:
      files: shard files (``ShardSet.files``) or a glob pattern.
      spec: ``FeatureSpec`` the model expects.
      dtype: storage dtype of the shards (the manifest's ``dtype``).
      batch_size: examples per batch.
      training: shuffle, repeat forever and drop the last partial batch;
        otherwise one pass in a fixed order.
      seed: shuffling seed.
      with_details: elements are ``(inputs, labels, {"video_id", "thumbnail"})``
        instead of ``(inputs, labels)``.
      parallel_files: shards read at once.
      shuffle_buffer: examples in the shuffle buffer.
      only: video ids to keep (every other video is skipped), or None.
      leave_out: video ids to skip, or None (a validation split carved
        from the training shards is ``only`` for one dataset and
        ``leave_out`` for the other).
      deterministic: the same batches in the same order for the same
        seed, so that a run can be repeated exactly (on 688 clips, runs
        that differed only in their reading order differed by up to 4
        points). False lets parallel reads hand over whatever is ready
        first (``bench.training_input`` measures what that buys).

    Returns:
      A ``tf.data.Dataset``.
    """
    import tensorflow as tf

    files = list_files(files) if isinstance(files, str) or hasattr(files, "__fspath__") else list(files)
    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(parallel_files, len(files)),
                                 num_parallel_calls=autotune, deterministic=deterministic)
    if only is not None or leave_out is not None:
        dataset = _select_videos(dataset, only, leave_out)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=training)

    def parse(serialized):
        inputs, labels, details = parse_batch(serialized, spec, dtype)
        return (inputs, labels, details) if with_details else (inputs, labels)

    dataset = dataset.map(parse, num_parallel_calls=autotune, deterministic=deterministic)
    return dataset.prefetch(autotune)


def _select_videos(dataset, only, leave_out):
    """Keeps the serialized records of the videos in ``only`` (if given)
    and not in ``leave_out`` (if given): the video id is parsed from the
    record's context alone, in parallel, before the batches are parsed."""
    import tensorflow as tf

    def table(video_ids):
        """video id -> 1 for the given ids, 0 for any other (an empty set
        holds one key that maps to 0: a table cannot be empty)."""
        keys, values = (sorted(video_ids), [1] * len(video_ids)) if video_ids else ([""], [0])
        return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string), tf.constant(values, tf.int32)), default_value=0)

    keep, drop = (table(ids) if ids is not None else None for ids in (only, leave_out))

    def wanted(serialized):
        context, _ = tf.io.parse_single_sequence_example(
            serialized, context_features={schema.VIDEO_ID: tf.io.FixedLenFeature([], tf.string)})
        video_id = context[schema.VIDEO_ID]
        verdict = tf.constant(True)
        if keep is not None:
            verdict = tf.logical_and(verdict, keep.lookup(video_id) > 0)
        if drop is not None:
            verdict = tf.logical_and(verdict, drop.lookup(video_id) == 0)
        return serialized, verdict

    def verdict_of(serialized, verdict):
        return verdict

    def record_of(serialized, verdict):
        return serialized

    # Named functions, not two lambdas on one line: AutoGraph cannot tell
    # such lambdas apart and printed a warning on every training run.
    dataset = dataset.map(wanted, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.filter(verdict_of).map(record_of)


def scan_shards(files, spec, dtype):
    """Reads every record of every file, to say which files are damaged
    (after a read error) or hold non-finite feature values (after a NaN).

    Returns:
      ``[(file, problem)]``, empty if every file reads cleanly and every value
      is finite.
    """
    import numpy as np
    import tensorflow as tf

    problems = []
    for file in files:
        non_finite = []
        try:
            batches = make_dataset([file], spec, dtype, 64, training=False, with_details=True)
            for inputs, _, details in batches:
                finite = np.isfinite(inputs["features"].numpy()).all(axis=(1, 2))
                video_ids = details[schema.VIDEO_ID].numpy()
                non_finite += [v.decode("utf-8") for v, ok in zip(video_ids, finite) if not ok]
        except tf.errors.DataLossError as e:
            problems.append((file, f"damaged or cut short ({tensorflow_error_text(e)})"))
            continue
        if non_finite:
            problems.append((file, f"non-finite feature values (NaN or Inf) in {len(non_finite)} videos: "
                                   f"{a_few(non_finite)}"))
    return problems
