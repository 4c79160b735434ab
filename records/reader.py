"""The training input pipeline: shards -> batches of padded feature sequences.

An asynchronous ``tf.data`` pipeline, in the order the tf.data performance
guide recommends:

  list shards -> (shuffle shards) -> interleave several files in parallel ->
  (shuffle examples, repeat) -> batch serialized protos -> parse whole
  batches in parallel (one vectorized parse per batch beats one per example)
  -> prefetch

so the CPU prepares the next batches while the model works on the current one.
Each element is ``({"features": [B, T, D], "num_frames": [B]}, label [B])``.
"""

import dataclasses
import pathlib

from records import manifest as manifest_lib
from records import schema
from records.inspect import list_files


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What a model expects of the records (from the manifest of its training data)."""

    feature_dim: int
    max_frames: int
    num_classes: int

    @classmethod
    def from_manifest(cls, manifest):
        return cls(manifest["feature_dim"], manifest["max_frames"], len(manifest["class_names"]))


def manifest_for(pattern):
    """Returns the manifest of the folder holding the shards that match ``pattern``.

    Raises:
      ValueError: no shard matches, the shards span several folders, or the
        folder has no complete manifest.
    """
    files = list_files(pattern)
    folders = {pathlib.Path(f).parent for f in files}
    if len(folders) != 1:
        raise ValueError(f"{pattern!r} matches shards in {len(folders)} folders; use one extraction's folder")
    folder = folders.pop()
    manifest = manifest_lib.read_manifest(folder)
    if manifest is None:
        raise ValueError(f"{folder} has no {manifest_lib.MANIFEST_NAME}; was it written by python -m extract?")
    if not manifest.get("complete"):
        raise ValueError(f"the extraction in {folder} is not finished (manifest says complete: false); "
                         "run the same python -m extract command again to complete it")
    return manifest


def parse_batch(serialized, spec, dtype):
    """Parses a batch of serialized SequenceExamples.

    Args:
      serialized: string tensor ``[B]``.
      spec: ``FeatureSpec``.
      dtype: how the values are stored, ``"float32"`` or ``"float16"``.

    Returns:
      ``({"features": float32 [B, T, D], "num_frames": int32 [B]}, label int32 [B])``.
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
            schema.LABEL: tf.io.FixedLenFeature([], tf.int64),
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
    with tf.control_dependencies(checks):
        label = tf.identity(label)
    return {"features": features, "num_frames": tf.cast(context[schema.NUM_FRAMES], tf.int32)}, label


def make_dataset(pattern, spec, dtype, batch_size, training, seed=None, parallel_files=8, shuffle_buffer=1024):
    """Builds the input pipeline for the shards matching ``pattern``.

    Args:
      pattern: glob pattern of TFRecord shards.
      spec: ``FeatureSpec`` the model expects.
      dtype: storage dtype of the shards (the manifest's ``dtype``).
      batch_size: examples per batch.
      training: shuffle, repeat forever and drop the last partial batch;
        otherwise one pass in a fixed order.
      seed: shuffling seed.
      parallel_files: shards read at once.
      shuffle_buffer: examples in the shuffle buffer.

    Returns:
      A ``tf.data.Dataset``.
    """
    import tensorflow as tf

    files = list_files(pattern)
    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(parallel_files, len(files)),
                                 num_parallel_calls=autotune, deterministic=not training)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(lambda serialized: parse_batch(serialized, spec, dtype), num_parallel_calls=autotune,
                          deterministic=not training)
    return dataset.prefetch(autotune)
