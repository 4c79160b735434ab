"""Summary of TFRecord shards: ``python -m records inspect 'OUT/*.tfrecord'``."""

import json
import os
import sys

import numpy as np

from common.console import a_few, tensorflow_error_text
from records import files as files_lib
from records import manifest as manifest_lib
from records import schema, writer
from records.reader import list_files


def iterate_videos(pattern):
    """Yields every video of the matching shards as a dict (see ``schema.decode_video``)."""
    import tensorflow as tf

    for serialized in tf.data.TFRecordDataset(list_files(pattern)).as_numpy_iterator():
        yield schema.decode_video(serialized)


def _read_file(path):
    """Yields the videos of one shard file; raises tf.errors.DataLossError
    where the file is damaged."""
    import tensorflow as tf

    for serialized in tf.data.TFRecordDataset([path]).as_numpy_iterator():
        yield schema.decode_video(serialized)


def inspect(pattern, per_video=False):
    """Reads every example of the matching shards and summarizes them.

    Checks as it goes that all examples agree on feature size, padded length
    and dtype, that padding frames are zero and values finite, that no video
    id occurs twice, that every file is one the folder's manifest lists, and
    that every file reads to its end.

    Args:
      pattern: glob pattern of TFRecord files.
      per_video: also list every video's id and ``num_frames``.

    Returns:
      A JSON-serializable dict: files, examples (in all and per split, from
      the shard names), feature_dim, max_frames, dtype, label histogram (by
      name), num_frames min/mean/max (the mean to 0.1), fps values,
      and ``problems`` (one sentence each; empty when all is well).

    Raises:
      ValueError: no matching file, or examples that disagree.
    """
    import tensorflow as tf

    files = list_files(pattern)
    shapes, dtypes, fps_values = set(), set(), set()
    num_frames, labels, videos, occurrences, per_split = [], {}, {}, {}, {}
    nonzero_padding, non_finite, damaged = [], [], {}
    label_names = {}  # folder -> {(label, label name)} its records hold
    for path in files:
        named = label_names.setdefault(files_lib.dirname(path), set())
        split = os.path.basename(path).split("-")[0]  # train-00000-of-00004.tfrecord
        try:
            for video in _read_file(path):
                per_split[split] = per_split.get(split, 0) + 1
                features = video[schema.FEATURES]
                video_id = video[schema.VIDEO_ID]
                shapes.add(features.shape)
                dtypes.add(video["dtype"])
                fps_values.add(round(video[schema.FPS], 6))
                num_frames.append(video[schema.NUM_FRAMES])
                videos[video_id] = video[schema.NUM_FRAMES]
                occurrences[video_id] = occurrences.get(video_id, 0) + 1
                name = f"{video[schema.LABEL]}:{video[schema.LABEL_NAME]}"
                labels[name] = labels.get(name, 0) + 1
                named.add((video[schema.LABEL], video[schema.LABEL_NAME]))
                if np.any(features[video[schema.NUM_FRAMES]:]):
                    nonzero_padding.append(video_id)
                if not np.isfinite(features).all():
                    non_finite.append(video_id)
        except tf.errors.DataLossError as e:
            damaged[path] = tensorflow_error_text(e)
    if len(shapes) > 1 or len(dtypes) > 1:
        raise ValueError(f"examples disagree: feature shapes {sorted(shapes)}, dtypes {sorted(dtypes)}")
    summary = {"files": len(files), "examples": len(num_frames), "examples_per_split": dict(sorted(per_split.items()))}
    problems = []
    if num_frames:
        (max_frames, feature_dim), = shapes
        summary.update({
            "feature_dim": feature_dim,
            "max_frames": max_frames,
            "dtype": dtypes.pop(),
            "fps": sorted(fps_values),
            "num_frames": {"min": int(min(num_frames)), "mean": round(float(np.mean(num_frames)), 1),
                           "max": int(max(num_frames))},
            "labels": dict(sorted(labels.items(), key=lambda kv: int(kv[0].split(":")[0]))),
            "videos_with_nonzero_padding": nonzero_padding,
        })
    if per_video:
        summary["videos"] = dict(sorted(videos.items()))
    duplicates = {video_id: count for video_id, count in sorted(occurrences.items()) if count > 1}
    if duplicates:
        summary["duplicate_video_ids"] = duplicates
        problems.append(f"{len(duplicates)} video ids occur more than once ({a_few(duplicates)}): "
                        f"{len(num_frames)} examples hold {len(occurrences)} videos")
    if damaged:
        summary["damaged_files"] = damaged
        problems += [f"{path} is damaged or cut short ({message}); delete it and run the same python -m extract "
                     "command again to extract it anew" for path, message in damaged.items()]
    if non_finite:
        problems.append(f"{len(non_finite)} videos hold NaN or Inf feature values: {a_few(non_finite)}")
    if nonzero_padding:
        problems.append(f"{len(nonzero_padding)} videos have non-zero padding: {a_few(nonzero_padding)}")
    for folder, named in label_names.items():  # each folder's shards against its own manifest
        problems += _manifest_problems(folder, [f for f in files if files_lib.dirname(f) == folder], named, summary)
    summary["problems"] = list(dict.fromkeys(problems))  # a problem of several folders is said once
    return summary


def _manifest_problems(folder, files, label_names, summary):
    """Checks the files of one folder against its manifest (if it has one),
    their records' ``(label, label name)`` pairs against its class names."""
    try:
        manifest = manifest_lib.read_manifest(folder)
    except ValueError as e:
        return [str(e)]
    if manifest is None:
        return []
    problems = []
    summary.setdefault("weights", manifest.get("weights"))
    if manifest.get("weights") == "none":
        problems.append("these features come from RANDOM weights (--weights none): they are meaningless")
    listed = {name for split in manifest.get("splits", {}).values() for name in split.get("shards", [])}
    strays = [files_lib.basename(f) for f in files if files_lib.basename(f) not in listed]
    if strays:
        summary["not_in_manifest"] = strays
        problems.append(f"{len(strays)} files are not shards that {manifest_lib.manifest_path(folder)} lists: "
                        f"{a_few(strays)} (left by another extraction?)")
    for path in files:
        if files_lib.basename(path) in strays:
            continue
        index = writer.read_committed_index(folder, files_lib.basename(path))
        if index is None:
            problems.append(f"{path} has no readable index ({writer.INDEX_DIR}/): its extraction did not finish it")
        elif "sha256" in index and files_lib.sha256(path) != index["sha256"]:
            summary.setdefault("not_as_written", []).append(path)
            problems.append(f"{path} is not the shard its extraction wrote (its SHA-256 differs from its index's; "
                            f"{index['records']} videos, {index['bytes']} bytes were written): another extraction's "
                            "shard copied over it? Move it away and run the same python -m extract command again")
    if summary["examples"]:
        for key in ("feature_dim", "max_frames", "dtype"):
            if manifest.get(key) != summary[key]:
                summary.setdefault("disagrees_with_manifest", {})[key] = manifest.get(key)
                problems.append(f"{key} is {summary[key]} in the records, {manifest.get(key)} in the manifest")
    class_names = manifest.get("class_names", [])
    misnamed = sorted(f"{label} is {name!r} in the records, "
                      f"{class_names[label] if 0 <= label < len(class_names) else 'no class'!r} in the manifest"
                      for label, name in label_names
                      if not 0 <= label < len(class_names) or class_names[label] != name)
    if misnamed:
        summary.setdefault("labels_disagree_with_manifest", []).extend(misnamed)
        problems.append(f"the class names of {manifest_lib.manifest_path(folder)} do not match the records' labels "
                        f"(label {a_few(misnamed, 2)}): was its class_names list edited or reordered? A model "
                        "trained on it would give videos the wrong names; restore it from the records' names")
    return problems


USAGE = """usage: python -m records inspect 'OUTPUT_DIR/*.tfrecord' [--videos]

Prints a JSON summary of the shards: examples, feature_dim, max_frames, dtype,
label histogram, num_frames min/mean/max, and problems found (duplicate video
ids, damaged files, NaN values, files the manifest does not list). --videos
also lists each video's num_frames. Exit status: 0, or 1 when it found
problems (also printed on stderr)."""


def main(argv):
    options = [a for a in argv[1:] if a.startswith("-")]
    arguments = [a for a in argv[1:] if not a.startswith("-")]
    if arguments and arguments[0] != "inspect":
        print(f"error: unknown command {arguments[0]!r}; the command is inspect\n\n{USAGE}", file=sys.stderr)
        return 2
    unknown = sorted(set(options) - {"--videos", "-h", "--help"})
    if unknown:
        print(f"error: unknown option {unknown[0]}\n\n{USAGE}", file=sys.stderr)
        return 2
    if len(arguments) != 2:
        print(USAGE)
        return 0 if {"-h", "--help"} & set(options) else 2
    try:  # a mistyped path is said before TensorFlow loads
        list_files(arguments[1])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from common import console

    console.import_tensorflow()
    try:
        summary = inspect(arguments[1], per_video="--videos" in options)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    for problem in summary["problems"]:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if summary["problems"] else 0
