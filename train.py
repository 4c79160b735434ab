"""Stage 2: train a GRU/LSTM video classifier on extracted features.

    python -m extract --demo                      # features/ from 24 synthetic videos
    python train.py --cell gru --steps 300        # about 50 s on 2 CPU cores
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

import contextlib
import dataclasses
import json
import logging
import math
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from common import console  # noqa: E402
from common.console import a_few  # noqa: E402

console.import_tensorflow()  # before Keras (imported by rnn.models) prints TensorFlow's start-up noise

from records import files  # noqa: E402
from records import manifest as manifest_lib  # noqa: E402
from records import reader  # noqa: E402
from rnn import distribute, models, run_dir as run_dir_lib, summaries  # noqa: E402

# Set by Ctrl-C or SIGTERM (see main): the training loop stops at the next step.
STOP_REQUESTED = threading.Event()
# Settings that define what a run learns: resuming with other values is refused.
DEFINING_SETTINGS = ("train_pattern", "eval_pattern", "batch_size", "learning_rate", "lr_decay", "clip_norm", "seed")
# Settings a resumed run may change (each session's values are recorded in run.json).
ADJUSTABLE_SETTINGS = ("epochs", "steps", "eval_every", "checkpoint_every", "log_every", "strategy",
                       "mixed_precision")


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
    strategy: str = "auto"
    mixed_precision: typing.Optional[bool] = None  # None: on when training on GPUs
    show_progress: bool = True
    progress_seconds: float = 30.0

    def __post_init__(self):
        """Raises ValueError (naming the flag) for a setting out of range."""
        if self.run_name is not None:
            run_dir_lib.check_run_name(self.run_name)
        for flag in ("batch_size", "learning_rate", "clip_norm", "epochs", "steps", "eval_every", "checkpoint_every",
                     "log_every"):
            console.check_number(flag, getattr(self, flag), above=0, optional=True)
        console.check_number("progress_seconds", self.progress_seconds, minimum=0)
        if self.lr_decay not in ("none", "cosine"):
            raise ValueError(f"unknown --lr_decay {self.lr_decay!r}; use none or cosine")
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(f"unknown --strategy {self.strategy!r}; choose one of {', '.join(distribute.STRATEGIES)}")

    @property
    def run_dir(self):
        return pathlib.Path(self.logdir) / (self.run_name or self.model.cell)


class TrainingError(Exception):
    """A run that cannot go on; the message says why and what to do."""


def _extraction_settings(manifest):
    """What a run must know of its features (``predict`` makes new ones alike,
    with the same quantized model if there is one)."""
    return {key: manifest.get(key) for key in (*manifest_lib.FEATURE_KEYS, "model") if key in manifest}


def _check_same_extraction(expected, manifest, what):
    details = manifest_lib.describe_differences(expected, manifest, manifest_lib.FEATURE_KEYS,
                                                "in the training data", "there")
    if details:
        raise TrainingError(f"{what} was extracted differently from the training data ({details})")


def _run_record(config, train_manifest):
    """What run.json says of a run, beside the sessions: the settings that
    define it and the extraction settings ``predict`` needs."""
    return {
        "model": dataclasses.asdict(config.model),
        "training": {key: getattr(config, key) for key in DEFINING_SETTINGS},
        "extraction": _extraction_settings(train_manifest),
    }


def _check_same_run(run_dir, stored, record):
    """Refuses to resume a run with settings that define another run."""
    # run.json of earlier versions kept these settings under "config".
    stored_training = stored.get("training") or {key: stored.get("config", {}).get(key) for key in DEFINING_SETTINGS}
    before = {**stored["model"], **stored_training}
    now = {**record["model"], **record["training"]}
    changes = manifest_lib.describe_differences(before, now, sorted(now), "there", "now")
    extraction = manifest_lib.describe_differences(stored["extraction"], record["extraction"],
                                                   manifest_lib.FEATURE_KEYS, "there", "now")
    if extraction:
        changes = "; ".join(filter(None, [changes, f"features extracted differently ({extraction})"]))
    if changes:
        raise TrainingError(f"{run_dir} holds a run with other settings ({changes}); resume it with its own "
                            "settings, or use another --run_name, or --restart to replace it")


def _record_session(run_dir, run, config, step, total_steps):
    """Appends this session (its start step and run length) to run.json, and
    says when the run's length or intervals changed since the last one."""
    session = {"from_step": step, "total_steps": total_steps,
               **{key: getattr(config, key) for key in ADJUSTABLE_SETTINGS}}
    sessions = run.setdefault("sessions", [])
    if sessions:
        changed = {key: (sessions[-1].get(key), value) for key, value in session.items()
                   if key != "from_step" and sessions[-1].get(key) != value}
        if changed:
            logging.info("resuming with %s (recorded in %s)", ", ".join(
                f"{key} {before} -> {after}" for key, (before, after) in changed.items()), run_dir_lib.RUN_FILE)
    sessions.append(session)
    files.write_json_atomic(run_dir / run_dir_lib.RUN_FILE, run)


def _open_shards(pattern):
    try:
        return reader.open_shards(pattern)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def _eval_shards(eval_pattern, train_shards):
    """Held-out shards, refused if they were extracted unlike the training
    data; None (with a notice) when there are none because the extraction
    wrote no test split."""
    try:
        shards = reader.open_shards(eval_pattern)
    except reader.NoShards as e:
        same_folder = files.same_folder(files.dirname(eval_pattern), train_shards.folder)
        if eval_pattern and (not same_folder or "test" in train_shards.manifest["splits"]):
            raise TrainingError(f"{e}: give --eval_pattern the held-out shards, or --eval_pattern='' to train "
                                "without held-out evaluation") from None
        logging.warning("no held-out data: %s; training without held-out evaluation (no eval scores, no best "
                        "checkpoint)", f"the extraction in {train_shards.folder} wrote no test split"
                        if eval_pattern else "--eval_pattern is empty")
        return None
    except ValueError as e:
        raise TrainingError(str(e)) from None
    _check_same_extraction(_extraction_settings(train_shards.manifest), shards.manifest,
                           f"--eval_pattern {eval_pattern!r}")
    _refuse_leaks(train_shards, shards)
    return shards


def _refuse_leaks(train_shards, eval_shards):
    """Held-out data must not be training data: no shard in both sets, no
    test-split shard among the training data, no video in both (by id, from
    the shards' indexes, which also catches two extractions of the same
    videos).

    Raises:
      TrainingError: naming the shards or videos, and the pattern to use.
    """
    def pattern(shards, split):
        return f"'{files.join(shards.folder, split)}-*.tfrecord'"

    shared = sorted(set(train_shards.files) & set(eval_shards.files))
    if shared:
        raise TrainingError(f"--train_pattern and --eval_pattern both match {a_few(shared)}: held-out scores "
                            f"would be scores on training data. Use --train_pattern {pattern(train_shards, 'train')} "
                            f"and --eval_pattern {pattern(eval_shards, 'test')}.")
    if "test" in train_shards.splits:
        raise TrainingError(f"--train_pattern {train_shards.pattern!r} matches the test split's shards "
                            f"({a_few(name for name in train_shards.indexes if name.startswith('test-'))}): training "
                            f"on held-out videos makes every held-out score meaningless. Use --train_pattern "
                            f"{pattern(train_shards, 'train')}.")
    both = sorted(train_shards.video_ids() & eval_shards.video_ids())
    if both:
        raise TrainingError(f"{len(both)} videos are in both the training and the held-out data ({a_few(both)}): "
                            f"--eval_pattern {eval_shards.pattern!r} holds videos that --train_pattern "
                            f"{train_shards.pattern!r} trains on (two extractions of the same videos?). Evaluate "
                            "on a test split extracted with the training data.")


def _eval_dataset(shards, batch_size):
    """One pass over held-out shards, with the video ids and thumbnails."""
    return reader.make_dataset(shards.files, shards.spec, shards.manifest["dtype"], batch_size, training=False,
                               with_details=True)


def _shard_problems(shard_sets):
    """``[(file, problem)]`` of the shards behind a read error or a NaN."""
    problems = []
    for shards in filter(None, shard_sets):
        problems += reader.scan_shards(shards.files, shards.spec, shards.manifest["dtype"])
    return problems


def _data_error(error, problems):
    """A TrainingError naming the shards that ``_shard_problems`` found."""
    if not problems:
        return TrainingError(f"reading the shards failed: {console.tensorflow_error_text(error)}")
    named = "; ".join(f"{file}: {problem}" for file, problem in problems[:3])
    return TrainingError(f"{console.tensorflow_error_text(error)}: {named}. Delete these shards and run the same python -m extract command again "
                         "to extract them anew (it redoes missing shards), then train again.")


def _schedule(config, total_steps):
    import keras

    if config.lr_decay == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total_steps)
    return config.learning_rate


def train(config, strategy=None):
    """Trains (or resumes) a run; returns the contents of ``metrics.json``.

    Under a multi-worker strategy every worker calls this; the chief alone
    writes the run folder (and returns its metrics; other workers return {}).

    Args:
      config: a ``TrainConfig``.
      strategy: the ``tf.distribute.Strategy`` made from ``config.strategy``
        (``distribute.make_strategy``); made here if None, which a
        multi-worker strategy does not allow once TensorFlow has run.

    Raises:
      TrainingError: bad data, a run folder holding another run or in use, or
        a loss that became NaN (the last good checkpoint is kept).
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    train_shards = _open_shards(config.train_pattern)
    eval_shards = _eval_shards(config.eval_pattern, train_shards)
    record = _run_record(config, train_shards.manifest)
    if strategy is None:
        try:
            strategy = distribute.make_strategy(config.strategy)
        except ValueError as e:
            raise TrainingError(str(e)) from None
    chief = distribute.is_chief(strategy)
    logging.info("training with %s", distribute.describe(strategy))
    try:
        # Only the chief opens (locks, maybe clears) the run folder; the others
        # wait for it, then read its checkpoints.
        folder = run_dir_lib.open_run_folder(config.run_dir, config.restart) if chief else contextlib.nullcontext()
        with folder as stored:
            if stored is not None:
                _check_same_run(config.run_dir, stored, record)
            if chief:
                run_dir_lib.keep_backbone_model(config.run_dir, record["extraction"], train_shards.folder)
            distribute.barrier(strategy)
            run = stored or {**record, "config": dataclasses.asdict(config)}
            return _train_in(config.run_dir, run, config, train_shards, eval_shards, strategy, chief)
    except run_dir_lib.RunFolderError as e:
        raise TrainingError(str(e)) from None


def _train_in(run_dir, run, config, train_shards, eval_shards, strategy, chief):
    """The training run proper, in a run folder the chief holds."""
    import keras
    import tensorflow as tf

    from rnn import evaluation

    spec, manifest = train_shards.spec, train_shards.manifest
    class_names = manifest["class_names"]
    steps_per_epoch = max(1, math.ceil(train_shards.videos / config.batch_size))
    total_steps = config.steps or config.epochs * steps_per_epoch
    eval_every = config.eval_every or max(steps_per_epoch, 50)
    # Short runs checkpoint often too, so that a kill loses little of them.
    checkpoint_every = config.checkpoint_every or max(1, min(50, total_steps // 20))
    top_k = evaluation.top_k_for(spec.num_classes)
    train_data, input_split = distribute.distribute_input(
        strategy, reader.make_dataset(train_shards.files, spec, manifest["dtype"], config.batch_size,
                                      training=True, seed=config.seed), train_shards.files)
    logging.info("input: %s", input_split)
    eval_data = _eval_dataset(eval_shards, config.batch_size) if eval_shards else None
    mixed = _use_mixed_precision(config)

    # Model, optimizer and checkpoints (under the strategy); resume from the latest by default.
    with strategy.scope():
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            model = models.build_model(config.model, spec.num_classes, spec.feature_dim, spec.max_frames)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        optimizer = keras.optimizers.Adam(_schedule(config, total_steps))
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    console.warm_up(model)
    # Every worker saves checkpoints (saving runs collectives); the chief's are
    # the run's, the others' go to a temporary folder, deleted at the end.
    scratch = None if chief else tempfile.mkdtemp(prefix="train_worker_")
    own = run_dir if chief else pathlib.Path(scratch)
    latest = tf.train.CheckpointManager(checkpoint, own / run_dir_lib.CHECKPOINTS, max_to_keep=3)
    best = tf.train.CheckpointManager(checkpoint, own / run_dir_lib.BEST, max_to_keep=1)
    resume_from = tf.train.latest_checkpoint(run_dir / run_dir_lib.CHECKPOINTS)
    if resume_from:
        checkpoint.restore(resume_from).assert_existing_objects_matched()
        logging.info("resumed from %s (step %d)", resume_from, _step_of(optimizer))
    step = _step_of(optimizer)
    metrics_path = run_dir / run_dir_lib.METRICS_FILE
    metrics = {}
    if chief:
        _record_session(run_dir, run, config, step, total_steps)
        if resume_from:
            metrics = files.read_json(metrics_path, "delete it; it is written again at the next checkpoint") or {}
        # Steps logged after the checkpoint we resume from are done again: drop them.
        for events in (run_dir_lib.TRAIN_EVENTS, run_dir_lib.EVAL_EVENTS, run_dir_lib.HPARAMS_EVENTS):
            run_dir_lib.drop_events_after(run_dir / events, step)
    best_eval = metrics.get("best_eval")

    board = summaries.Board(run_dir, chief, class_names, top_k,
                            f"{', '.join(eval_shards.splits)} split" if eval_shards else "no held-out data")
    board.start(summaries.hparams_record(config, manifest, total_steps))
    train_step = _make_train_step(model, optimizer, config.clip_norm, top_k, strategy, config.batch_size)
    predict = evaluation.inference_function(model)

    def evaluate_and_log(step, last=False):
        # Every worker evaluates (the same weights on the same data give the
        # same scores), so that all of them take the same best-checkpoint
        # decision; only the chief's board writes.
        nonlocal best_eval
        if eval_data is None:
            return None
        results, outputs = evaluation.evaluate(predict, eval_data, class_names)
        improved = best_eval is None or results["top1"] > best_eval["top1"]
        if improved:
            best_eval = {**results, "step": step}
            best.save(checkpoint_number=step)
        # Images where they are looked at: when the best changes, and at the end.
        board.evaluation(step, results, outputs, model.trainable_variables, best_eval, draw_images=improved or last)
        if last:
            board.projector(outputs)
        if chief:
            logging.info("step %d: eval top-1 %.3f%s, loss %.4f (best top-1 %.3f at step %d)", step,
                         results["top1"], f", top-{top_k} {results['top_k']:.3f}" if top_k else "", results["loss"],
                         best_eval["top1"], best_eval["step"])
        return results

    # The loop.
    final_eval = metrics.get("final_eval")
    interval, session = _Meter(), _Meter()
    batches = iter(train_data)
    progress = console.Progress(total_steps, "step", f"training {run_dir.name}", config.show_progress and chief,
                                config.progress_seconds if chief else float("inf"), initial=step)
    try:
        while step < total_steps:
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            started = time.perf_counter()
            inputs, labels = next(batches)
            got_batch = time.perf_counter()
            outputs = {key: float(value) for key, value in train_step(inputs, labels).items()}
            step = _step_of(optimizer)
            if not math.isfinite(outputs["loss"]):
                kept = f"the last good checkpoint ({latest.latest_checkpoint or 'none yet'}) is kept"
                logging.info("the loss became %s: looking for NaN or Inf in the training shards", outputs["loss"])
                problems = _shard_problems([train_shards])
                if problems:
                    raise _data_error(f"the loss became {outputs['loss']} at step {step}; {kept}", problems)
                raise TrainingError(f"the loss became {outputs['loss']} at step {step}; {kept}. The features are "
                                    "finite: lower --learning_rate or --clip_norm and run again.")
            for meter in (interval, session):
                meter.add(outputs, config.batch_size, time.perf_counter() - started, got_batch - started)
            progress.update(1)

            if step % config.log_every == 0 or step == total_steps:
                means = interval.means()
                board.training(step, means, float(optimizer.learning_rate.numpy()),
                               float(tf.linalg.global_norm(model.trainable_variables)))
                progress.note(f"loss {means['loss']:.3f}")
                interval = _Meter()
            if step % eval_every == 0 or step == total_steps:
                final_eval = evaluate_and_log(step, last=step == total_steps)
            if step % checkpoint_every == 0 or step == total_steps:
                latest.save(checkpoint_number=step)
                metrics = _metrics(run_dir, step, final_eval, best_eval, session, metrics)
                if chief:
                    files.write_json_atomic(metrics_path, metrics)

        if metrics.get("step") != step:  # killed between saving the checkpoint and metrics.json
            final_eval = evaluate_and_log(step, last=True)
            metrics = _metrics(run_dir, step, final_eval, best_eval, session, metrics)
            if chief:
                files.write_json_atomic(metrics_path, metrics)
    except KeyboardInterrupt:
        board.end("interrupted")
        if distribute.workers(strategy) == 1:
            # Steps are atomic, so the state is consistent: keep it. (With
            # several workers a save needs all of them: they resume from the
            # last periodic checkpoint instead.)
            latest.save(checkpoint_number=_step_of(optimizer))
            logging.warning("interrupted at step %d; checkpoint saved: run the same command to resume",
                            _step_of(optimizer))
        raise
    except (tf.errors.DataLossError, evaluation.NonFiniteOutputs) as e:
        board.end("failure")
        raise _data_error(e, _shard_problems([train_shards, eval_shards])) from None
    except TrainingError:
        board.end("failure")
        raise
    finally:
        progress.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)  # a folder this process made for itself
    board.end("success")
    if not chief:
        return {}
    _export(model, run_dir)
    return metrics


def _step_of(optimizer):
    """The optimizer's step count (a mirrored variable under a strategy)."""
    return int(optimizer.iterations.numpy())


def _use_mixed_precision(config):
    """``--mixed_precision``: on by default when the replicas are GPUs."""
    if config.mixed_precision is not None:
        return config.mixed_precision
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _make_train_step(model, optimizer, clip_norm, top_k, strategy, global_batch):
    """One optimization step over a global batch, as a ``tf.function``.

    On every replica: forward, cross-entropy summed over its examples and
    divided by the global batch, gradients. Then the gradients are summed
    across replicas (all-reduce) *before* the global norm is taken and
    clipped, so that ``--clip_norm`` means what it means on one device; the
    norm returned is the one before clipping. Keras' optimizer sums the
    gradients it gets across replicas once more, so each replica hands it
    1/replicas of the clipped gradient. With mixed precision the loss is
    scaled (``LossScaleOptimizer``) and the clip threshold with it.

    Returns:
      ``train_step(inputs, labels) -> {"loss", "gradient_norm",
      "gradients/LAYER"..., "top1" [, "topK"]}`` for the global batch.
    """
    import keras
    import tensorflow as tf

    per_example_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    replicas = strategy.num_replicas_in_sync
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(inputs, labels):
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            logits = tf.cast(model(inputs, training=True), tf.float32)
            loss = tf.reduce_sum(per_example_loss(labels, logits)) / global_batch
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        scale = tf.cast(optimizer.dynamic_scale, tf.float32) if scaled else 1.0
        scaled_norm = tf.linalg.global_norm(gradients)
        clipped, _ = tf.clip_by_global_norm(gradients, clip_norm * scale, use_norm=scaled_norm)
        optimizer.apply_gradients(zip([g / replicas for g in clipped], model.trainable_variables))
        # Per layer too (before clipping), to see which layer's gradients grow.
        by_layer = {}
        for variable, gradient in zip(model.trainable_variables, gradients):
            by_layer.setdefault(variable.path.split("/")[0], []).append(gradient)
        layer_norms = {f"gradients/{layer}": tf.linalg.global_norm(grads) / scale for layer, grads in by_layer.items()}
        correct = {"top1": tf.math.in_top_k(labels, logits, 1)}
        if top_k:
            correct[f"top{top_k}"] = tf.math.in_top_k(labels, logits, top_k)
        sums = context.all_reduce(tf.distribute.ReduceOp.SUM, {
            "loss": loss, **{key: tf.reduce_sum(tf.cast(hit, tf.float32)) for key, hit in correct.items()}})
        return {"loss": sums["loss"], "gradient_norm": scaled_norm / scale, **layer_norms,
                **{key: sums[key] / global_batch for key in correct}}

    @tf.function
    def train_step(inputs, labels):
        outputs = strategy.run(replica_step, args=(inputs, labels))
        # Every replica holds the same all-reduced values: take the first.
        return {key: strategy.experimental_local_results(value)[0] for key, value in outputs.items()}

    return train_step


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
    final = run_dir / run_dir_lib.MODEL_FILE
    partial = files.partial_path(final) + ".keras"  # Keras insists on the suffix
    model.save(partial)
    os.replace(partial, final)


def evaluate_run(run_dir, eval_pattern, batch_size=32):
    """Evaluates a trained run's final model on other shards, without training.

    Returns:
      The metrics dict (also written to ``<run_dir>/evaluation.json``).
    """
    import tensorflow as tf

    from rnn import evaluation

    run_dir = pathlib.Path(run_dir)
    try:
        run = run_dir_lib.read_run_file(run_dir)
        if run is None:
            raise TrainingError(f"{run_dir} is not a run of train.py (it has no {run_dir_lib.RUN_FILE})")
        model = run_dir_lib.load_final_model(run_dir)
    except run_dir_lib.RunFolderError as e:
        raise TrainingError(str(e)) from None
    shards = _open_shards(eval_pattern)
    _check_same_extraction(run["extraction"], shards.manifest, f"--eval_pattern {eval_pattern!r}")
    try:
        results, _ = evaluation.evaluate(evaluation.inference_function(model), _eval_dataset(shards, batch_size),
                                         run["extraction"]["class_names"])
    except (tf.errors.DataLossError, evaluation.NonFiniteOutputs) as e:
        raise _data_error(e, _shard_problems([shards])) from None
    # Scoring training data is allowed here, but never called held-out.
    results = {"eval_pattern": eval_pattern, "scored": _scored_data(shards), **results}
    files.write_json_atomic(run_dir / run_dir_lib.EVALUATION_FILE, results)
    return results


def _scored_data(shards):
    """What evaluation scored: "test split", or e.g. "train split (not held-out data)"."""
    splits = " and ".join(shards.splits)
    return f"{splits} split" + ("" if shards.splits == ["test"] else " (not held-out data)")


def _scores(results):
    """"top-1 0.875, top-3 1.000" (top-k only where it means something)."""
    text = f"top-1 {results['top1']:.3f}"
    return text + (f", top-{results['k']} {results['top_k']:.3f}" if results.get("k") else "")


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
flags.DEFINE_bool("restart", False, "Start from step 0 instead of resuming: deletes the files train.py wrote in "
                  "the run folder (events, checkpoints, model, run.json, metrics) and nothing else.")
flags.DEFINE_enum("strategy", TrainConfig.strategy, list(distribute.STRATEGIES),
                  "Where to train: auto (all GPUs of this machine if more than one, else one device), one_device, "
                  "mirrored (all GPUs of this machine), multi_worker (the machines TF_CONFIG names; run the same "
                  "command on each). --batch_size stays the global batch.")
flags.DEFINE_integer("logical_cpus", None, "Split the CPU into this many logical devices, so that --strategy "
                     "mirrored has replicas without GPUs (for tests and benchmarks).", lower_bound=1)
flags.DEFINE_bool("mixed_precision", None, "Compute in float16 with loss scaling (default: on when training on "
                  "GPUs, off on CPUs). The recurrent layers keep their cuDNN kernels.")
console.define_progress_flags(flags)
flags.adopt_module_key_flags(console)

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise console.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import signal

    try:
        config = TrainConfig(
            model=models.ModelConfig(cell=FLAGS.cell, layers=FLAGS.layers, units=FLAGS.units,
                                     dropout=FLAGS.dropout, bidirectional=FLAGS.bidirectional),
            train_pattern=FLAGS.train_pattern, eval_pattern=FLAGS.eval_pattern, logdir=FLAGS.logdir,
            run_name=FLAGS.run_name, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
            lr_decay=FLAGS.lr_decay, clip_norm=FLAGS.clip_norm, epochs=FLAGS.epochs, steps=FLAGS.steps,
            eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every,
            seed=FLAGS.seed, restart=FLAGS.restart, strategy=FLAGS.strategy,
            mixed_precision=FLAGS.mixed_precision, show_progress=FLAGS.progress,
            progress_seconds=FLAGS.progress_seconds)
    except ValueError as e:
        raise console.UsageError(str(e)) from None

    console.log_plainly()
    if FLAGS.logical_cpus:
        distribute.split_cpu(FLAGS.logical_cpus)
    with console.tensorflow_startup_filtered():
        try:
            strategy = distribute.make_strategy(config.strategy) if FLAGS.mode == "train" else None
        except ValueError as e:
            raise console.UsageError(str(e)) from None

    # Ctrl-C and "kill PID" ask the loop to stop after the current step (which
    # then saves a checkpoint): stopping between steps, not inside a
    # TensorFlow call, leaves nothing half done. A second signal stops at once.
    def request_stop(signal_number, frame):
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt
        STOP_REQUESTED.set()
        logging.warning("stopping after this step (send the signal again to stop at once)")

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    import tensorflow as tf

    try:
        if FLAGS.mode == "eval":
            results = evaluate_run(config.run_dir, config.eval_pattern, config.batch_size)
            print(json.dumps({key: results[key] for key in ("eval_pattern", "scored", "examples", "top1", "k",
                                                            "top_k", "loss")}, indent=2))
            return 0
        metrics = train(config, strategy)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except tf.errors.InvalidArgumentError as e:  # a check in the input pipeline failed
        print(f"error: bad input data: {console.tensorflow_error_text(e)}", file=sys.stderr)
        return 1
    if not metrics:  # a worker other than the chief: the chief reports
        return 0
    best, final = metrics["best_eval"], metrics["final_eval"]
    held_out = (f"held-out {_scores(final)} (best top-1 {best['top1']:.3f} at step {best['step']})" if final
                else "no held-out evaluation (no held-out data)")
    print(f"run: {config.run_dir}\nstep {metrics['step']}: {held_out}\n"
          f"training: {metrics['train'].get('examples_per_second', 0):.0f} examples/s\n"
          f"tensorboard --logdir {config.logdir}")
    return 0


if __name__ == "__main__":
    console.run_command(main, "python train.py")
