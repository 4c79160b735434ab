"""Synthetic feature shards for training tests, written with the project's own
writer and manifest, as ``python -m extract`` would."""

import numpy as np

from records import manifest as manifest_lib
from records import schema, writer


def write_split(output_dir, split, examples, max_frames, dtype="float32", shards=2, ids_as=None):
    """Writes ``examples`` (``(features [n, D], label, label_name)``) into
    committed shards; video ids are ``LABEL/SPLIT_I.avi`` (with ``ids_as``
    in place of the split: the same videos as another split's)."""
    names = []
    for shard in range(shards):
        shard_writer = writer.ShardWriter(output_dir, writer.shard_name(split, shard, shards))
        for i, (features, label, label_name) in list(enumerate(examples))[shard::shards]:
            video_id = f"{label_name}/{ids_as or split}_{i}.avi"
            shard_writer.write(schema.encode_video(video_id, label, label_name, features, max_frames, 5.0, dtype),
                               video_id, label, len(features))
        shard_writer.commit()
        names.append(shard_writer.name)
    return {"videos": len(examples), "failed": 0, "shards": names}


def write_extraction(output_dir, splits, class_names, max_frames, dtype="float32", backbone="synthetic", ids_as=None):
    """Writes shards for each split (name -> examples) and a complete manifest."""
    output_dir.mkdir(parents=True, exist_ok=True)
    feature_dim = len(next(iter(splits.values()))[0][0][0])
    manifest = {
        "complete": True, "backbone": backbone, "weights": "none", "precision": "float32", "image_size": 224,
        "feature_dim": feature_dim,
        "fps": 5.0, "seconds": max_frames / 5.0, "max_frames": max_frames, "dtype": dtype,
        "class_names": class_names,
        "splits": {name: write_split(output_dir, name, examples, max_frames, dtype, ids_as=ids_as)
                   for name, examples in splits.items()},
    }
    manifest_lib.write_manifest(output_dir, manifest)
    return manifest


def temporal_order_examples(count, max_frames=20, feature_dim=16, seed=0):
    """Four classes told apart only by temporal order: frames move from one
    point to another (class 0: A->B, 1: B->A, 2: A->C, 3: C->A), plus noise,
    over 5..max_frames frames. The two classes of a pair have the same mean
    frame, so only a model that sees order can separate them."""
    rng = np.random.default_rng(seed)
    points = np.random.default_rng(123).normal(size=(3, feature_dim)).astype(np.float32)
    a, b, c = points
    paths = [(a, b), (b, a), (a, c), (c, a)]
    examples = []
    for i in range(count):
        label = i % 4
        start, end = paths[label]
        length = int(rng.integers(5, max_frames + 1))
        t = np.linspace(0, 1, length, dtype=np.float32)[:, None]
        features = (1 - t) * start + t * end + rng.normal(scale=0.3, size=(length, feature_dim))
        examples.append((features.astype(np.float32), label, f"class{label}"))
    return examples
