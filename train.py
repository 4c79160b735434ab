"""Stage 2: train a GRU/LSTM video classifier on extracted features.

    python -m extract --demo                      # features/ from 24 synthetic videos
    python train.py --cell gru --steps 300        # about a minute on 2 CPU cores
    tensorboard --logdir tensorboard_logs         # then open http://localhost:6006

On the demo, expect held-out top-1 of 1.0 (at least 0.9) after 300 steps with
either cell; ``tensorboard_logs/gru/metrics.json`` says so. Running the same
command again resumes from the last checkpoint (``--restart`` starts over);
``--mode eval`` evaluates a finished run on other shards:

    python train.py --mode eval --run_name gru --eval_pattern 'other/test-*.tfrecord'

The run folder ``<logdir>/<run_name>`` (run name: the cell, unless given)
holds ``train/`` and ``eval/`` TensorBoard events, ``checkpoints/`` (latest),
``best/`` (best held-out top-1), ``model.keras`` (the final model),
``run.json`` (settings, class names, extraction settings for ``predict``) and
``metrics.json``.

The loop, step by step: read a batch (asynchronous tf.data), forward,
cross-entropy, gradients, global gradient norm, clip by global norm, Adam
update; every ``--log_every`` steps write train scalars; every
``--eval_every`` steps evaluate, draw the confusion matrix and keep the best
checkpoint; every ``--checkpoint_every`` steps save a checkpoint.
"""

import dataclasses
import json
import logging
import math
import os
import pathlib
import shutil
import sys
import time
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from extract import console  # noqa: E402
from records import manifest as manifest_lib  # noqa: E402
from records import reader  # noqa: E402
from rnn import models  # noqa: E402

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (the flags of ``train.py``)."""

    model: models.ModelConfig = models.ModelConfig()
    train_pattern: str = "features/train-*.tfrecord"
    eval_pattern: str = "features/test-*.tfrecord"
    logdir: str = "tensorboard_logs"
    run_name: typing.Optional[str] = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_decay: str = "none"
    clip_norm: float = 1.0
    epochs: int = 30
    steps: typing.Optional[int] = None
    eval_every: typing.Optional[int] = None
    checkpoint_every: typing.Optional[int] = None
    log_every: int = 10
    seed: int = 0
    restart: bool = False

    @property
    def run_dir(self):
        return pathlib.Path(self.logdir) / (self.run_name or self.model.cell)


class TrainingError(Exception):
    """A run that cannot go on; the message says why and what to do."""


def _extraction_settings(manifest):
    """What a run must know of its features (``predict`` makes new ones alike)."""
    return {key: manifest.get(key) for key in manifest_lib.FEATURE_KEYS}


def _check_same_extraction(expected, manifest, what):
    details = manifest_lib.describe_differences(expected, manifest, manifest_lib.FEATURE_KEYS,
                                                "in the training data", "there")
    if details:
        raise TrainingError(f"{what} was extracted differently from the training data ({details})")


def _prepare_run_dir(config, train_manifest):
    """Creates or reopens the run folder; refuses to resume a different run."""
    run_dir = config.run_dir
    if config.restart and run_dir.exists():
        shutil.rmtree(run_dir)
    run_file = run_dir / RUN_FILE
    settings = {
        "model": dataclasses.asdict(config.model),
        "train_pattern": config.train_pattern,
        "batch_size": config.batch_size,
        "extraction": _extraction_settings(train_manifest),
    }
    if run_file.exists():
        stored = json.loads(run_file.read_text())
        for key in ("model", "extraction"):
            if stored[key] != settings[key]:
                raise TrainingError(f"{run_dir} holds a run with other {key} settings ({stored[key]} there, "
                                    f"{settings[key]} now); use another --run_name, or --restart to replace it")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest_lib.write_json_atomic(run_file, {**settings, "config": dataclasses.asdict(config)})
    return run_dir


def _manifest_for(pattern):
    try:
        return reader.manifest_for(pattern)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def _eval_dataset(eval_pattern, extraction, batch_size):
    """One pass over held-out shards, refused if they were extracted unlike
    ``extraction`` (the training data's settings)."""
    manifest = _manifest_for(eval_pattern)
    _check_same_extraction(extraction, manifest, f"--eval_pattern {eval_pattern!r}")
    return reader.make_dataset(eval_pattern, reader.FeatureSpec.from_manifest(manifest), manifest["dtype"],
                               batch_size, training=False)


def _read_data(config):
    """Training manifest, model input spec and the two input pipelines."""
    train_manifest = _manifest_for(config.train_pattern)
    spec = reader.FeatureSpec.from_manifest(train_manifest)
    eval_data = _eval_dataset(config.eval_pattern, _extraction_settings(train_manifest), config.batch_size)
    train_data = reader.make_dataset(config.train_pattern, spec, train_manifest["dtype"], config.batch_size,
                                     training=True, seed=config.seed)
    return train_manifest, spec, train_data, eval_data


def _schedule(config, total_steps):
    import keras

    if config.lr_decay == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total_steps)
    if config.lr_decay != "none":
        raise TrainingError(f"unknown --lr_decay {config.lr_decay!r}; use none or cosine")
    return config.learning_rate


def train(config):
    """Trains (or resumes) a run; returns the contents of ``metrics.json``.

    Raises:
      TrainingError: bad data, a run folder holding another run, or a loss
        that became NaN (the last good checkpoint is kept).
    """
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from rnn import evaluation

    keras.utils.set_random_seed(config.seed)
    train_manifest, spec, train_data, eval_data = _read_data(config)
    class_names = train_manifest["class_names"]
    run_dir = _prepare_run_dir(config, train_manifest)
    steps_per_epoch = max(1, math.ceil(train_manifest["splits"]["train"]["videos"] / config.batch_size))
    total_steps = config.steps or config.epochs * steps_per_epoch
    eval_every = config.eval_every or max(steps_per_epoch, 50)
    # Short runs checkpoint often too, so that a kill loses little of them.
    checkpoint_every = config.checkpoint_every or max(1, min(50, total_steps // 20))

    # Model, optimizer and checkpoints; resume from the latest by default.
    model = models.build_model(config.model, spec.num_classes, spec.feature_dim, spec.max_frames)
    optimizer = keras.optimizers.Adam(_schedule(config, total_steps))
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    latest = tf.train.CheckpointManager(checkpoint, run_dir / "checkpoints", max_to_keep=3)
    best = tf.train.CheckpointManager(checkpoint, run_dir / "best", max_to_keep=1)
    if latest.latest_checkpoint:
        checkpoint.restore(latest.latest_checkpoint).assert_existing_objects_matched()
        logging.info("resumed from %s (step %d)", latest.latest_checkpoint, int(optimizer.iterations))
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() and latest.latest_checkpoint else {}
    best_eval = metrics.get("best_eval")

    train_writer = tf.summary.create_file_writer(str(run_dir / "train"))
    eval_writer = tf.summary.create_file_writer(str(run_dir / "eval"))
    with train_writer.as_default():
        _log_hparams(config, train_manifest, run_dir.name)
    train_step = _make_train_step(model, optimizer, config.clip_norm, spec.num_classes)
    predict = evaluation.inference_function(model)

    def evaluate_and_log(step):
        nonlocal best_eval
        results = evaluation.evaluate(predict, eval_data, class_names)
        image = evaluation.confusion_matrix_png(results["confusion_matrix"], class_names,
                                                f"{run_dir.name}, step {step}, top-1 {results['top1']:.3f}")
        with eval_writer.as_default(step=step):
            for key in ("loss", "top1", "top5"):
                tf.summary.scalar(key, results[key])
            tf.summary.image("confusion_matrix", tf.image.decode_png(image)[None])
        with train_writer.as_default(step=step):
            for variable in model.trainable_variables:
                tf.summary.histogram(variable.path, variable)
        logging.info("step %d: eval top-1 %.3f, top-5 %.3f, loss %.4f", step, results["top1"], results["top5"],
                     results["loss"])
        if best_eval is None or results["top1"] > best_eval["top1"]:
            best_eval = {**results, "step": step}
            best.save(checkpoint_number=step)
        return results

    # The loop.
    step = int(optimizer.iterations)
    final_eval = metrics.get("final_eval")
    interval, session = _Meter(), _Meter()
    batches = iter(train_data)
    with tqdm(total=total_steps, initial=step, unit="step", desc=f"training {run_dir.name}",
              dynamic_ncols=True, disable=not sys.stderr.isatty()) as bar:
        try:
            while step < total_steps:
                started = time.perf_counter()
                inputs, labels = next(batches)
                got_batch = time.perf_counter()
                outputs = {key: float(value) for key, value in train_step(inputs, labels).items()}
                step = int(optimizer.iterations)
                if not math.isfinite(outputs["loss"]):
                    raise TrainingError(f"the loss became {outputs['loss']} at step {step}; the last good checkpoint "
                                        f"({latest.latest_checkpoint or 'none yet'}) is kept. Lower --learning_rate "
                                        "or --clip_norm, or check the features for NaN values, and run again.")
                for meter in (interval, session):
                    meter.add(outputs, len(labels), time.perf_counter() - started, got_batch - started)
                bar.update(1)

                if step % config.log_every == 0 or step == total_steps:
                    means = interval.means()
                    with train_writer.as_default(step=step):
                        for key, value in means.items():
                            tf.summary.scalar(key, value)
                        tf.summary.scalar("learning_rate", float(optimizer.learning_rate))
                        tf.summary.scalar("parameter_norm", float(tf.linalg.global_norm(model.trainable_variables)))
                    bar.set_postfix(loss=f"{means['loss']:.3f}")
                    interval = _Meter()
                if step % eval_every == 0 or step == total_steps:
                    final_eval = evaluate_and_log(step)
                if step % checkpoint_every == 0 or step == total_steps:
                    latest.save(checkpoint_number=step)
                    metrics = _metrics(run_dir, step, final_eval, best_eval, session, metrics)
                    manifest_lib.write_json_atomic(metrics_path, metrics)

        except KeyboardInterrupt:
            # Steps are atomic, so the state is consistent: keep it.
            latest.save(checkpoint_number=int(optimizer.iterations))
            logging.warning("interrupted at step %d; checkpoint saved: run the same command to resume",
                            int(optimizer.iterations))
            raise

    if metrics.get("step") != step:  # killed between saving the checkpoint and metrics.json
        final_eval = evaluate_and_log(step)
        metrics = _metrics(run_dir, step, final_eval, best_eval, session, metrics)
        manifest_lib.write_json_atomic(metrics_path, metrics)
    _export(model, run_dir)
    train_writer.flush()
    eval_writer.flush()
    return metrics


def _make_train_step(model, optimizer, clip_norm, num_classes):
    """One optimization step as a ``tf.function``: forward, cross-entropy,
    gradients, global norm (returned, as it was before clipping), clip, Adam."""
    import keras
    import tensorflow as tf

    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(inputs, labels):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss = loss_function(labels, logits)
        gradients = tape.gradient(loss, model.trainable_variables)
        gradient_norm = tf.linalg.global_norm(gradients)
        clipped, _ = tf.clip_by_global_norm(gradients, clip_norm, use_norm=gradient_norm)
        optimizer.apply_gradients(zip(clipped, model.trainable_variables))
        top1 = tf.reduce_mean(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32))
        top5 = tf.reduce_mean(tf.cast(tf.math.in_top_k(labels, logits, min(5, num_classes)), tf.float32))
        return {"loss": loss, "top1": top1, "top5": top5, "gradient_norm": gradient_norm}

    return train_step


def _log_hparams(config, manifest, run_name):
    """Records the run's hyperparameters for TensorBoard's HParams tab."""
    from tensorboard.plugins.hparams import api as hparams

    hparams.hparams({
        **dataclasses.asdict(config.model),
        "batch_size": config.batch_size, "learning_rate": config.learning_rate, "lr_decay": config.lr_decay,
        "clip_norm": config.clip_norm, "backbone": manifest["backbone"], "fps": manifest["fps"],
    }, trial_id=run_name)


class _Meter:
    """Sums of step outputs and time over some steps (a logging interval, a session)."""

    def __init__(self):
        self.steps = self.examples = 0
        self.seconds = self.waiting = 0.0
        self.sums = {}

    def add(self, outputs, examples, seconds, waiting):
        self.steps += 1
        self.examples += examples
        self.seconds += seconds
        self.waiting += waiting
        for key, value in outputs.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self):
        """Mean of each output, plus throughput and the share of time spent waiting for input."""
        return {
            **{key: value / self.steps for key, value in self.sums.items()},
            "examples_per_second": self.examples / self.seconds,
            "input_wait_fraction": self.waiting / self.seconds,
        }


def _metrics(run_dir, step, final_eval, best_eval, session, previous):
    """metrics.json: final and best evaluation, step, training throughput (of
    this session, or of the previous one if this one trained no step)."""
    throughput = previous.get("train", {})
    if session.steps:
        means = session.means()
        throughput = {key: means[key] for key in ("examples_per_second", "input_wait_fraction")}
    return {"run": str(run_dir), "step": step, "final_eval": final_eval, "best_eval": best_eval,
            "train": throughput}


def _export(model, run_dir):
    """Saves the final model (with run.json's class names beside it) atomically."""
    partial = run_dir / f".{MODEL_FILE}.partial.keras"
    model.save(partial)
    partial.replace(run_dir / MODEL_FILE)


def evaluate_run(run_dir, eval_pattern, batch_size=32):
    """Evaluates a trained run's final model on other shards, without training.

    Returns:
      The metrics dict (also written to ``<run_dir>/evaluation.json``).
    """
    import keras

    from rnn import evaluation

    run_dir = pathlib.Path(run_dir)
    if not (run_dir / MODEL_FILE).exists():
        raise TrainingError(f"{run_dir} has no {MODEL_FILE}: train it first (python train.py ...)")
    run = json.loads((run_dir / RUN_FILE).read_text())
    class_names = run["extraction"]["class_names"]
    data = _eval_dataset(eval_pattern, run["extraction"], batch_size)
    model = keras.models.load_model(run_dir / MODEL_FILE)
    results = {"eval_pattern": eval_pattern,
               **evaluation.evaluate(evaluation.inference_function(model), data, class_names)}
    manifest_lib.write_json_atomic(run_dir / "evaluation.json", results)
    return results


flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (or resume), or eval: evaluate a trained run's "
                  "final model on --eval_pattern without training.")
flags.DEFINE_enum("cell", "gru", list(models.CELLS), "Recurrent cell.")
flags.DEFINE_integer("layers", 2, "Stacked recurrent layers.")
flags.DEFINE_integer("units", 256, "Units per recurrent layer (per direction).")
flags.DEFINE_float("dropout", 0.0, "Dropout between recurrent layers and before the classifier (on layer "
                   "outputs, not recurrent connections, which keeps the cuDNN kernel usable).")
flags.DEFINE_bool("bidirectional", False, "Also read each video backwards.")
flags.DEFINE_string("train_pattern", TrainConfig.train_pattern, "Training shards (from python -m extract).")
flags.DEFINE_string("eval_pattern", TrainConfig.eval_pattern, "Held-out shards, evaluated during training "
                    "(and by --mode eval).")
flags.DEFINE_string("logdir", TrainConfig.logdir, "TensorBoard root; each run gets a subfolder.")
flags.DEFINE_string("run_name", None, "Run subfolder of --logdir (default: the cell name).")
flags.DEFINE_integer("batch_size", TrainConfig.batch_size, "Videos per batch.")
flags.DEFINE_float("learning_rate", TrainConfig.learning_rate, "Adam learning rate (initial, with a decay).")
flags.DEFINE_enum("lr_decay", TrainConfig.lr_decay, ["none", "cosine"], "Learning-rate schedule over the run.")
flags.DEFINE_float("clip_norm", TrainConfig.clip_norm, "Clip gradients to this global norm.")
flags.DEFINE_integer("epochs", TrainConfig.epochs, "Passes over the training videos (ignored with --steps).")
flags.DEFINE_integer("steps", None, "Training steps in all (overrides --epochs).")
flags.DEFINE_integer("eval_every", None, "Evaluate every this many steps (default: every epoch, "
                     "at least 50 steps apart).")
flags.DEFINE_integer("checkpoint_every", None, "Save a checkpoint every this many steps (default: every 50 "
                     "steps, or every 5 % of the run if that is more often). Ctrl-C and SIGTERM also save one.")
flags.DEFINE_integer("log_every", TrainConfig.log_every, "Write training scalars every this many steps.")
flags.DEFINE_integer("seed", TrainConfig.seed, "Random seed (initialization, shuffling).")
flags.DEFINE_bool("restart", False, "Delete the run folder and start from step 0 instead of resuming.")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import signal

    import tensorflow as tf

    def interrupt(signal_number, frame):
        raise KeyboardInterrupt

    # Treat "kill PID" like Ctrl-C: save a checkpoint, then stop.
    signal.signal(signal.SIGTERM, interrupt)
    console.log_plainly()
    config = TrainConfig(
        model=models.ModelConfig(cell=FLAGS.cell, layers=FLAGS.layers, units=FLAGS.units, dropout=FLAGS.dropout,
                                 bidirectional=FLAGS.bidirectional),
        train_pattern=FLAGS.train_pattern, eval_pattern=FLAGS.eval_pattern, logdir=FLAGS.logdir,
        run_name=FLAGS.run_name, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        lr_decay=FLAGS.lr_decay, clip_norm=FLAGS.clip_norm, epochs=FLAGS.epochs, steps=FLAGS.steps,
        eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every,
        seed=FLAGS.seed, restart=FLAGS.restart)
    try:
        if FLAGS.mode == "eval":
            results = evaluate_run(config.run_dir, config.eval_pattern, config.batch_size)
            print(json.dumps({key: results[key] for key in ("eval_pattern", "examples", "top1", "top5", "loss")},
                             indent=2))
            return 0
        metrics = train(config)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except tf.errors.InvalidArgumentError as e:  # a check in the input pipeline failed
        print(f"error: bad input data: {e.message.splitlines()[0]}", file=sys.stderr)
        return 1
    best, final = metrics["best_eval"], metrics["final_eval"]
    print(f"run: {config.run_dir}\nstep {metrics['step']}: held-out top-1 {final['top1']:.3f}, "
          f"top-5 {final['top5']:.3f} (best top-1 {best['top1']:.3f} at step {best['step']})\n"
          f"training: {metrics['train'].get('examples_per_second', 0):.0f} examples/s\n"
          f"tensorboard --logdir {config.logdir}")
    return 0


if __name__ == "__main__":
    app.run(main)
