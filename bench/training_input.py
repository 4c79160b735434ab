"""Training input pipeline: can the reader keep the model busy?

    python -m bench.training_input        # about 4 minutes on 2 CPU cores

On shards shaped like the default extraction (50 frames x 1280 float32
features per video), measured side by side in one run:

  reader       examples/s of the tf.data reader alone (no model), in a
               fixed order (the default: a seed repeats a run) and in
               whatever order parallel reads finish, in rotated rounds
  model        examples/s of the training step fed from in-memory tensors,
               for --cell gru and lstm at train.py's defaults
  waiting      the share of a real ``train.py`` run's wall time spent waiting
               for the next batch (target < 5 %)
"""

import argparse
import os
import pathlib
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import REPO, print_table, rotated_rounds, save  # noqa: E402


def write_shards(folder, videos, max_frames=50, feature_dim=1280, classes=10, dtype="float32"):
    import sys

    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from features import write_extraction

    rng = np.random.default_rng(0)
    examples = [(rng.normal(size=(int(rng.integers(10, max_frames + 1)), feature_dim)).astype(np.float32),
                 i % classes, f"class{i % classes}") for i in range(videos)]
    return write_extraction(folder, {"train": examples, "test": examples[: videos // 4]},
                            [f"class{k}" for k in range(classes)], max_frames, dtype=dtype)


def reader_rate(pattern, manifest, batch_size, batches, deterministic=True):
    from records import reader

    spec = reader.FeatureSpec.from_manifest(manifest)
    data = reader.make_dataset(pattern, spec, manifest["dtype"], batch_size, training=True, seed=0,
                               deterministic=deterministic)
    iterator = iter(data)
    next(iterator)  # start-up: open files, fill buffers
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def model_rate(cell, manifest, batch_size, steps):
    import keras
    import numpy as np
    import tensorflow as tf

    from rnn import evaluation, models, optimization

    model = models.build_model(models.ModelConfig(cell=cell), len(manifest["class_names"]),
                               manifest["feature_dim"], manifest["max_frames"])
    optimizer = keras.optimizers.Adam(1e-3)
    step = optimization.make_train_step(model, optimizer, 1.0, evaluation.charted_ks(len(manifest["class_names"])),
                                        tf.distribute.get_strategy(), batch_size)
    rng = np.random.default_rng(0)
    inputs = {"features": rng.normal(size=(batch_size, manifest["max_frames"], manifest["feature_dim"]))
              .astype(np.float32),
              "num_frames": rng.integers(10, manifest["max_frames"] + 1, batch_size).astype(np.int32)}
    labels = rng.integers(0, len(manifest["class_names"]), batch_size).astype(np.int32)
    float(step(inputs, labels)["loss"])  # trace
    started = time.perf_counter()
    for _ in range(steps):
        float(step(inputs, labels)["loss"])  # the training loop reads the loss every step too
    return steps * batch_size / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=512)
    parser.add_argument("--steps", type=int, default=500, help="timed training steps per cell")
    parser.add_argument("--rounds", type=int, default=3, help="rotated rounds of the two reading orders")
    args = parser.parse_args()

    from rnn import models, training

    batch_size = training.TrainConfig.batch_size
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        folder = pathlib.Path(workdir) / "features"
        manifest = write_shards(folder, args.videos)
        pattern = str(folder / "train-*.tfrecord")
        orders = {"fixed order": True, "any order": False}
        rates = {order: [] for order in orders}

        def read_in(order):
            return lambda _: rates[order].append(reader_rate(pattern, manifest, batch_size, 60, orders[order]))

        rotated_rounds({order: read_in(order) for order in orders}, args.rounds, pathlib.Path(workdir))
        median = {order: statistics.median(values) for order, values in rates.items()}
        results["reader_examples_per_second"] = median["fixed order"]
        results["reader_any_order_examples_per_second"] = median["any order"]
        results["any_order_over_fixed_order"] = median["any order"] / median["fixed order"]
        rows.append(["reader alone, fixed order (default)", "", f"{median['fixed order']:.0f}", "", ""])
        rows.append([f"reader alone, any order ({results['any_order_over_fixed_order']:.2f}x)", "",
                     f"{median['any order']:.0f}", "", ""])
        for cell in models.CELLS:
            rate = model_rate(cell, manifest, batch_size, args.steps)
            config = training.TrainConfig(model=models.ModelConfig(cell=cell), train_pattern=pattern,
                                       eval_pattern=str(folder / "test-*.tfrecord"), logdir=workdir,
                                       steps=args.steps, eval_every=10 ** 6, log_every=10)
            metrics = training.train(config)
            waiting = metrics["train"]["input_wait_fraction"]
            results[cell] = {"model_examples_per_second": rate,
                             "reader_over_model": results["reader_examples_per_second"] / rate,
                             "train_py_examples_per_second": metrics["train"]["examples_per_second"],
                             "input_wait_fraction": waiting}
            rows.append([f"train step, {cell}", "in-memory batch", f"{rate:.0f}",
                         f"{results['reader_examples_per_second'] / rate:.1f}x", f"{100 * waiting:.1f} %"])
    print_table(f"examples/s, batch {batch_size}, 50 x 1280 float32 features per video",
                ["what", "input", "examples/s", "reader / model", "train.py waiting on input"], rows)
    save("training_input", results)


if __name__ == "__main__":
    main()
