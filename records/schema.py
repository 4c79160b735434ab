"""The one definition of the TFRecord schema, shared by writer and reader.

Each video is one ``tf.train.SequenceExample``:

context
  ``video_id``    bytes   path of the video relative to the ``--videos`` folder
  ``label``       int64   class index (position in the manifest's ``class_names``)
  ``label_name``  bytes   class name
  ``group``       bytes   clips of one group stay in one split (``records.groups``:
                          a UCF-101 ``gNN``, an HMDB source movie); shards
                          written before it existed lack it
  ``num_frames``  int64   real frames before padding
  ``fps``         float   frames per second the video was sampled at
  ``thumbnail``   bytes   optional: a small JPEG (``THUMBNAIL_SIZE`` pixels a
                          side) of the video's middle sampled frame, for
                          TensorBoard's pictures of held-out clips; shards
                          written before it existed lack it and read as before
feature list ``features``
  exactly ``max_frames`` entries, one per sampled frame, zeros after
  ``num_frames``. With dtype ``float32`` each entry is a FloatList of D
  values; with ``float16`` it is one BytesList value holding D little-endian
  float16 numbers (2·D bytes), which halves the files.
"""

import numpy as np

VIDEO_ID = "video_id"
LABEL = "label"
LABEL_NAME = "label_name"
GROUP = "group"
NUM_FRAMES = "num_frames"
FPS = "fps"
THUMBNAIL = "thumbnail"
FEATURES = "features"
# 96 px: sharp enough in TensorBoard's clip sheets; 2.9 kB and 0.3 ms per video
# (64 px: 1.8 kB, the same time), against ~250 kB of float32 features.
THUMBNAIL_SIZE = 96

DTYPES = ("float32", "float16")
_FLOAT16_LE = np.dtype("<f2")


def check_dtype(dtype):
    if dtype not in DTYPES:
        raise ValueError(f"unknown feature dtype {dtype!r}; expected one of {DTYPES}")


def thumbnail_jpeg(frames):
    """A ``THUMBNAIL_SIZE`` JPEG of the middle frame of uint8 RGB ``frames`` ``[T, S, S, 3]``."""
    import io

    from PIL import Image

    image = Image.fromarray(frames[len(frames) // 2]).resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def encode_video(video_id, label, label_name, features, max_frames, fps, dtype, thumbnail=None, group=None):
    """Serializes one video's features as a padded SequenceExample.

    Args:
      video_id: path of the video relative to the videos folder.
      label: class index.
      label_name: class name.
      features: float array ``[num_frames, D]`` with ``1 <= num_frames <= max_frames``.
      max_frames: length every video is padded to.
      fps: frame rate the frames were sampled at.
      dtype: ``"float32"`` or ``"float16"``: how feature values are stored.
      thumbnail: optional JPEG bytes (``thumbnail_jpeg``).
      group: the video's group (``records.groups.group_of``), if known.

    Returns:
      The serialized ``tf.train.SequenceExample`` (bytes).
    """
    import tensorflow as tf

    check_dtype(dtype)
    num_frames, dim = features.shape
    if not 1 <= num_frames <= max_frames:
        raise ValueError(f"{video_id}: {num_frames} frames, expected 1..{max_frames}")
    padded = np.zeros((max_frames, dim), np.float32)
    padded[:num_frames] = features
    if dtype == "float32":
        # Python floats (tolist) fill a FloatList 6x faster than numpy scalars.
        frames = [tf.train.Feature(float_list=tf.train.FloatList(value=row)) for row in padded.tolist()]
    else:
        frames = [tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.astype(_FLOAT16_LE).tobytes()]))
                  for row in padded]
    context = {
        VIDEO_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[video_id.encode("utf-8")])),
        LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        LABEL_NAME: tf.train.Feature(bytes_list=tf.train.BytesList(value=[label_name.encode("utf-8")])),
        NUM_FRAMES: tf.train.Feature(int64_list=tf.train.Int64List(value=[num_frames])),
        FPS: tf.train.Feature(float_list=tf.train.FloatList(value=[fps])),
    }
    if group is not None:
        context[GROUP] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[group.encode("utf-8")]))
    if thumbnail:
        context[THUMBNAIL] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[thumbnail]))
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list={FEATURES: tf.train.FeatureList(feature=frames)}),
    )
    return example.SerializeToString()


def decode_video(serialized):
    """Parses one serialized SequenceExample in Python (for inspection and tests).

    Returns:
      A dict with ``video_id``, ``label``, ``label_name``, ``num_frames``,
      ``fps``, ``group`` and ``thumbnail`` (None in older shards), ``dtype``
      (how the values were stored) and ``features``, a float32 array
      ``[max_frames, D]`` including the padding.
    """
    import tensorflow as tf

    example = tf.train.SequenceExample.FromString(serialized)
    context = example.context.feature
    frames = example.feature_lists.feature_list[FEATURES].feature
    if frames and frames[0].WhichOneof("kind") == "bytes_list":
        dtype = "float16"
        features = np.stack([np.frombuffer(f.bytes_list.value[0], _FLOAT16_LE) for f in frames]).astype(np.float32)
    else:
        dtype = "float32"
        features = np.array([f.float_list.value for f in frames], np.float32)
    return {
        VIDEO_ID: context[VIDEO_ID].bytes_list.value[0].decode("utf-8"),
        LABEL: context[LABEL].int64_list.value[0],
        LABEL_NAME: context[LABEL_NAME].bytes_list.value[0].decode("utf-8"),
        NUM_FRAMES: context[NUM_FRAMES].int64_list.value[0],
        FPS: context[FPS].float_list.value[0],
        GROUP: context[GROUP].bytes_list.value[0].decode("utf-8") if GROUP in context else None,
        THUMBNAIL: context[THUMBNAIL].bytes_list.value[0] if THUMBNAIL in context else None,
        "dtype": dtype,
        FEATURES: features,
    }
