"""Accuracy on real action video: grouped k-fold cross-validation on JHMDB.

    pip install -e ".[bench]"             # scikit-learn, for the folds and the baselines
    python -m bench.accuracy              # MoViNet-A0 stream, GRU and LSTM: about 30 min on 2 CPU cores
    python -m bench.accuracy --backbones efficientnet_lite0 --fps 30 --seconds 1.5 --results accuracy

``../shared/jhmdb-train`` (688 JHMDB clips, 21 actions; see its README) is
extracted once per backbone, as a user would (by default ``--fps 10
--seconds 2``, the extractor's short-clip advice for these clips; the
backbone's default precision), into ``--cache``. Its videos are then
split into ``--folds`` folds by source movie (stratified by class, so that
every fold tests every action; no movie in two folds). For each fold, the
other folds' records are written as the training split and the fold's as
the test split of a fold extraction, and ``rnn.training.train`` is run on
it with the product's defaults: it carves its own validation split (by
movie) out of the training split, which alone chooses the model it
exports (the refit on every training video, for the length its validation
split chose); the fold is scored once, for this report. Beside it, the
baselines the recurrent models must beat, logistic regressions whose C is
chosen by grouped 3-fold CV inside the training folds: on each video's mean
and standard deviation of its frames' features (standardized), and on the
features of its last real frame (a streaming video CNN's have seen the
whole video).

Printed and saved to ``bench/results/accuracy.json`` (or ``--results``):
top-1 per fold (the mean over seeds), the mean over folds and seeds, the
standard deviation over folds, and, with ``--seeds N``, the spread (max -
min) of the mean over N training seeds.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import REPO, local_weights, print_table, save  # noqa: E402

JHMDB = pathlib.Path(os.environ.get("JHMDB_TRAIN", REPO.parent / "shared" / "jhmdb-train"))
BASELINES = {"mean+std logistic": "pooled", "last-frame logistic": "last"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", default=str(JHMDB), help="class folders of real clips")
    parser.add_argument("--backbones", default="movinet_a0_stream")
    parser.add_argument("--models", default="gru,lstm",
                        help="comma-separated models: a cell, with the product's defaults, or a cell and the "
                             "ModelConfig fields that differ, as in gru:units=64+last_frame=False; empty: the baseline "
                             "alone")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per fold (for the seed spread)")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--precision", default="int8", choices=("int8", "float32"),
                        help="the backbone's precision (int8: what --precision auto takes where it pays; "
                             "movinet_a0_stream's only one)")
    parser.add_argument("--features", action="append", default=[], metavar="BACKBONE=DIR",
                        help="an existing extraction of --videos to use for a backbone")
    parser.add_argument("--results", default="accuracy",
                        help="the name of the JSON file in bench/results (another keeps the default run's)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bench_accuracy"),
                        help="where each backbone's extraction is made once and kept")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.features)

    results, rows = {}, []
    for backbone in args.backbones.split(","):
        features = pathlib.Path(given.get(backbone) or extract_once(args, backbone))
        scores = cross_validate(features, [m for m in args.models.split(",") if m], args.folds, args.seeds)
        results[backbone] = {"features": str(features), **scores}
        for model, score in scores["models"].items():
            spread = f"{score['seed_spread']:.3f}" if "seed_spread" in score else "-"
            rows.append([f"{backbone} ({scores['precision']})", model, f"{score['mean']:.3f}", f"{score['std']:.3f}",
                         spread, " ".join(f"{top1:.3f}" for top1 in score["folds"])])
    print_table(f"JHMDB ({args.videos}): top-1 on held-out movies, {args.folds}-fold grouped CV, "
                f"--fps {args.fps:g} --seconds {args.seconds:g}",
                ["features", "model", "mean", "std (folds)", "seed spread", "per fold"], rows)
    save(args.results, {"videos": args.videos, "folds": args.folds, "seeds": args.seeds, "fps": args.fps,
                      "seconds": args.seconds, "results": results})


def extract_once(args, backbone):
    """The folder of ``--videos``' features by ``backbone``, extracted (all
    in the train split) unless a finished extraction is already there."""
    from extract import dataset, local_runner, plan
    from records.manifest import read_manifest

    suffix = "" if args.precision == "int8" else f"_{args.precision}"  # int8's folders keep their earlier names
    folder = pathlib.Path(args.cache) / f"{backbone}_fps{args.fps:g}_{args.seconds:g}s{suffix}"
    manifest = read_manifest(folder) if folder.exists() else None
    if not (manifest and manifest.get("complete")):
        video_set = dataset.load_videos(args.videos, test_fraction=0.0)
        config = plan.ExtractConfig(backbone=backbone, weights=local_weights(backbone), precision=args.precision,
                                    fps=args.fps, seconds=args.seconds)
        local_runner.extract(video_set, folder, config, show_progress=True)
    return folder


def cross_validate(features, model_names, num_folds, seeds):
    """Top-1 of each model on each held-out fold of ``features``' videos.

    Returns:
      ``{"videos", "groups", "models": {name: {"folds", "mean", "std"[, "seed_spread", "seed_means"]}}}``.
    """
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    from records import reader

    shards = reader.open_shards(str(features / "train-*.tfrecord"))
    videos = sorted((video_id, label, group) for group, members in shards.videos_by_group().items()
                    for video_id, label in members)
    labels = np.array([label for _, label, _ in videos])
    groups = np.array([group for _, _, group in videos])
    folds = StratifiedGroupKFold(num_folds, shuffle=True, random_state=0).split(np.zeros(len(videos)), labels,
                                                                               groups)
    per_fold = {}
    with tempfile.TemporaryDirectory() as workdir:
        for fold, (_, test) in enumerate(folds):
            test_ids = {videos[i][0] for i in test}
            folder = write_fold(shards, test_ids, pathlib.Path(workdir) / f"fold{fold}", fold, num_folds)
            for name, kind in BASELINES.items():
                per_fold.setdefault(name, []).append([logistic_baseline(folder, kind)])
            for name in model_names:
                per_fold.setdefault(name, []).append([train_and_score(folder, name, seed, workdir)
                                                      for seed in range(seeds)])
            print(f"fold {fold + 1}/{num_folds}: " + json.dumps({name: scores[-1] for name, scores in
                                                               per_fold.items()}), flush=True)
            shutil.rmtree(folder)
    models = {name: summarize(scores) for name, scores in per_fold.items()}
    return {"videos": len(videos), "groups": len(set(groups)), "precision": shards.manifest.get("precision"),
            "models": models}


def summarize(scores):
    """One model's ``[folds][seeds]`` top-1 scores as ``{"folds": per-fold
    mean over seeds, "mean": over folds and seeds, "std": over folds,
    "per_seed": the table}``, plus with several seeds ``"seed_means"`` (each
    seed's mean over folds) and ``"seed_spread"`` (their max - min)."""
    import numpy as np

    table = np.array(scores)
    fold_means = table.mean(1)
    summary = {"folds": [round(float(x), 4) for x in fold_means], "mean": float(table.mean()),
               "std": float(fold_means.std()), "per_seed": table.round(4).tolist()}
    if table.shape[1] > 1:
        seed_means = table.mean(0)
        summary.update(seed_means=[round(float(x), 4) for x in seed_means],
                       seed_spread=float(seed_means.max() - seed_means.min()))
    return summary


def write_fold(shards, test_ids, folder, fold, num_folds):
    """A fold extraction: ``shards``' records, the fold's videos as the test
    split and the others as the train split, with the source's manifest
    (its settings, backbone file and class list) so that train.py reads it
    as any extraction."""
    import tensorflow as tf

    from records import files, manifest as manifest_lib, schema, writer

    folder.mkdir(parents=True)
    index = {video["video_id"]: video for shard in shards.indexes.values() for video in shard["videos"]}
    split_writers = {split: writer.ShardWriter(folder, writer.shard_name(split, 0, 1)) for split in ("train", "test")}
    for serialized in tf.data.TFRecordDataset(shards.files):
        video_id = tf.io.parse_single_sequence_example(serialized, context_features={
            schema.VIDEO_ID: tf.io.FixedLenFeature([], tf.string)})[0][schema.VIDEO_ID].numpy().decode("utf-8")
        video = index[video_id]
        split_writers["test" if video_id in test_ids else "train"].write(
            serialized.numpy(), video_id, video["label"], video["num_frames"], group=video.get("group"))
    manifest = dict(shards.manifest, split_source={"cross_validation": {"folds": num_folds, "fold": fold}},
                    splits={})
    for split, shard_writer in split_writers.items():
        committed = shard_writer.commit()
        manifest["splits"][split] = {"videos": committed["records"], "failed": 0, "shards": [shard_writer.name],
                                     "frames": sum(video["num_frames"] for video in committed["videos"])}
    if "model" in manifest:
        shutil.copy(files.join(shards.folder, manifest["model"]["file"]), folder / manifest["model"]["file"])
    manifest_lib.write_manifest(str(folder), manifest)
    return folder


def model_config(name):
    """The ``ModelConfig`` a ``--models`` entry names: ``gru`` is
    ``ModelConfig(cell="gru")``, ``gru:units=64+last_frame=False`` that with
    ``units=64, last_frame=False`` (each value parsed as its field's type)."""
    import dataclasses

    from rnn import models

    cell, _, changes = name.partition(":")
    types = {field.name: field.type for field in dataclasses.fields(models.ModelConfig)}
    values = {}
    for change in filter(None, changes.split("+")):
        key, _, text = change.partition("=")
        values[key] = text.lower() in ("1", "true") if types[key] is bool else types[key](text)
    return models.ModelConfig(cell=cell, **values)


def train_and_score(folder, name, seed, workdir):
    """Test top-1 of the model ``train.py --cell CELL [--FIELD VALUE...] --seed SEED`` exports (defaults otherwise)."""
    from rnn import training

    config = training.TrainConfig(train_pattern=str(folder / "train-*.tfrecord"),
                                  eval_pattern=str(folder / "test-*.tfrecord"),
                                  logdir=str(pathlib.Path(workdir) / "runs"),
                                  run_name=re.sub(r"\W", "_", f"{folder.name}_{name}_{seed}"),
                                  model=model_config(name), seed=seed)
    metrics = training.train(config)
    shutil.rmtree(config.run_dir)
    return metrics["exported"]["test"]["top1"]


def logistic_baseline(folder, kind):
    """Test top-1 of a logistic regression (C by grouped CV) on each video's
    standardized ``kind`` features: ``pooled`` (mean and std of its frames)
    or ``last`` (its last real frame's)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y, train_groups = video_features(folder / "train-*.tfrecord", kind)
    test_x, test_y, _ = video_features(folder / "test-*.tfrecord", kind)
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                          {"logisticregression__C": [0.01, 0.03, 0.1, 0.3, 1.0]}, cv=GroupKFold(3))
    search.fit(train_x, train_y, groups=train_groups)
    return float(np.mean(search.predict(test_x) == test_y))


def video_features(pattern, kind):
    """Each video's ``kind`` features (``pooled``: the mean and standard
    deviation over its real frames; ``last``: its last real frame's), its
    label and group."""
    import numpy as np

    from records import groups
    from records.inspect import iterate_videos

    rows, labels, video_groups = [], [], []
    for video in iterate_videos(str(pattern)):
        frames = video["features"][:video["num_frames"]]
        rows.append(np.concatenate([frames.mean(0), frames.std(0)]) if kind == "pooled" else frames[-1])
        labels.append(video["label"])
        video_groups.append(video["group"] or groups.group_of(video["video_id"], video["label_name"]))
    return np.array(rows), np.array(labels), np.array(video_groups)


if __name__ == "__main__":
    main()
