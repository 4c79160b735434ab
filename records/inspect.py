"""Summary of TFRecord shards: ``python -m records inspect 'OUT/*.tfrecord'``."""

import json
import pathlib

import numpy as np

from records import manifest as manifest_lib
from records import schema
from records.reader import list_files


def iterate_videos(pattern):
    """Yields every video of the matching shards as a dict (see ``schema.decode_video``)."""
    import tensorflow as tf

    for serialized in tf.data.TFRecordDataset(list_files(pattern)).as_numpy_iterator():
        yield schema.decode_video(serialized)


def inspect(pattern, per_video=False):
    """Reads every example of the matching shards and summarizes them.

    Checks as it goes that all examples agree on feature size, padded length
    and dtype, and that padding frames are zero.

    Args:
      pattern: glob pattern of TFRecord files.
      per_video: also list every video's id and ``num_frames``.

    Returns:
      A JSON-serializable dict: files, examples, feature_dim, max_frames,
      dtype, label histogram (by name), num_frames min/mean/max, fps values.

    Raises:
      ValueError: no matching file, or examples that disagree.
    """
    files = list_files(pattern)
    shapes, dtypes, fps_values = set(), set(), set()
    num_frames, labels, videos = [], {}, {}
    nonzero_padding = []
    for video in iterate_videos(pattern):
        features = video[schema.FEATURES]
        shapes.add(features.shape)
        dtypes.add(video["dtype"])
        fps_values.add(round(video[schema.FPS], 6))
        num_frames.append(video[schema.NUM_FRAMES])
        videos[video[schema.VIDEO_ID]] = video[schema.NUM_FRAMES]
        name = f"{video[schema.LABEL]}:{video[schema.LABEL_NAME]}"
        labels[name] = labels.get(name, 0) + 1
        if np.any(features[video[schema.NUM_FRAMES]:]):
            nonzero_padding.append(video[schema.VIDEO_ID])
    if len(shapes) > 1 or len(dtypes) > 1:
        raise ValueError(f"examples disagree: feature shapes {sorted(shapes)}, dtypes {sorted(dtypes)}")
    summary = {"files": len(files), "examples": len(num_frames)}
    if num_frames:
        (max_frames, feature_dim), = shapes
        summary.update({
            "feature_dim": feature_dim,
            "max_frames": max_frames,
            "dtype": dtypes.pop(),
            "fps": sorted(fps_values),
            "num_frames": {"min": int(min(num_frames)), "mean": float(np.mean(num_frames)),
                           "max": int(max(num_frames))},
            "labels": dict(sorted(labels.items(), key=lambda kv: int(kv[0].split(":")[0]))),
            "videos_with_nonzero_padding": nonzero_padding,
        })
    if per_video:
        summary["videos"] = dict(sorted(videos.items()))
    manifest = manifest_lib.read_manifest(pathlib.Path(files[0]).parent)
    if manifest is not None and num_frames:
        for key in ("feature_dim", "max_frames", "dtype"):
            if manifest.get(key) != summary[key]:
                summary.setdefault("disagrees_with_manifest", {})[key] = manifest.get(key)
    return summary


USAGE = """usage: python -m records inspect 'OUTPUT_DIR/*.tfrecord' [--videos]

Prints a JSON summary of the shards: examples, feature_dim, max_frames, dtype,
label histogram, num_frames min/mean/max. --videos also lists each video's
num_frames."""


def main(argv):
    options = [a for a in argv[1:] if a.startswith("-")]
    arguments = [a for a in argv[1:] if not a.startswith("-")]
    if len(arguments) != 2 or arguments[0] != "inspect" or set(options) - {"--videos"}:
        print(USAGE)
        return 0 if {"-h", "--help"} & set(options) else 2
    try:
        print(json.dumps(inspect(arguments[1], per_video="--videos" in options), indent=2, ensure_ascii=False))
    except ValueError as e:
        print(f"error: {e}")
        return 1
    return 0
