"""Training a run, step by step (``python train.py`` is its command line).

    python -m extract --demo                      # features/ from 24 synthetic videos
    python train.py --cell gru --steps 300        # about 40 s on 2 CPU cores
    tensorboard --logdir tensorboard_logs         # then open http://localhost:6006

On the demo, expect held-out top-1 of 1.0 (at least 0.9) after 300 steps
with either cell; ``tensorboard_logs/gru/metrics.json`` says so.

``train(config)`` reads as a run goes:

1. **open the data**: training and held-out (test) shards, checked against
   their manifests and each other, and a validation split carved out of the
   training shards by group (``rnn.data``);
2. **open the run folder**: locked; a new run, or the same run resumed
   (settings that define another run are refused);
3. **build** the model, its optimizer and checkpoints, under the
   distribution strategy; a new run sets the model's input standardization
   from the training videos' frames;
4. **restore** the latest checkpoint (the default: the same command resumes);
5. **loop**: a batch, a train step (forward, loss, gradients summed across
   replicas, clipped by global norm, Adam); every ``log_every`` steps the
   training scalars (gradient and parameter norms included); every
   ``eval_every`` an evaluation of the validation and test splits, in which
   validation loss alone chooses the best checkpoint; every
   ``checkpoint_every`` a checkpoint and ``metrics.json``;
6. **refit**: steps 3 to 5 again for a new model on every training video
   (the validation split's too), for the steps the validation split chose,
   in ``refit/`` (``_Phase``): the validation split chose the length, and
   no training video is left out of the model the run exports (on JHMDB the
   15 % carve-out cost 1.5-2.7 points of test top-1: BENCHMARKS.md section 11);
7. **baseline**: a logistic regression on each video's pooled features,
   fitted on the same videos and scored on the same test split
   (``rnn.baseline``), beside the model's score;
8. **export** ``model.keras``: the refit's final model (without a
   validation split: the final model; with ``--refit=false``: the
   checkpoint the validation split chose);
9. the embeddings projector of the exported model.

The run folder (``rnn.run_dir``): the HParams session at its root,
``train/``, ``validation/``, ``test/`` (TensorBoard, ``rnn.summaries``),
``checkpoints/``, ``best/``, ``refit/`` (the refit's ``train/``, ``test/``,
``checkpoints/``, ``metrics.json``), ``model.keras``, ``run.json``,
``metrics.json``.
"""

import contextlib
import dataclasses
import logging
import math
import pathlib
import shutil
import tempfile
import threading
import time
import typing

import numpy as np

from common import console, memory
from records import files
from records import manifest as manifest_lib
from rnn import checkpoints as checkpoints_lib
from rnn import data as data_lib
from rnn import baseline, distribute, evaluation, models, optimization, run_dir as run_dir_lib, summaries
from rnn.configs import TrainConfig  # noqa: F401  (what train takes)

log = logging.getLogger(__name__)

# Set by Ctrl-C or SIGTERM (see train.py): the loop stops at the next step.
STOP_REQUESTED = threading.Event()
# Settings that define what a run learns: resuming with other values is refused.
DEFINING_SETTINGS = ("train_pattern", "eval_pattern", "validation_fraction", "batch_size", "learning_rate",
                     "lr_decay", "clip_norm", "seed")
# Settings a resumed run may change (each session's values are recorded in run.json).
ADJUSTABLE_SETTINGS = ("epochs", "steps", "eval_every", "checkpoint_every", "log_every", "strategy",
                       "mixed_precision", "refit")


class TrainingError(Exception):
    """A run that cannot go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a run is, and how often it logs, evaluates and checkpoints."""

    total_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int

    @classmethod
    def of(cls, config, training_videos):
        steps_per_epoch = max(1, math.ceil(training_videos / config.batch_size))
        total = config.steps or config.epochs * steps_per_epoch
        # Short runs checkpoint often too, so that a kill loses little of them.
        return cls(total, config.log_every, config.eval_every or max(steps_per_epoch, 50),
                   config.checkpoint_every or max(1, min(50, total // 20)))

    def due(self, step, every):
        """Whether ``step`` is one of every ``every`` steps, or the last."""
        return step % every == 0 or step == self.total_steps


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
    data = _open_data(config)
    _check_batch_memory(config, data.spec)
    strategy = strategy or _make_strategy(config)
    chief = distribute.is_chief(strategy)
    log.info("training with %s", distribute.describe(strategy))
    with _features_held(data), _open_run_folder(config, data, strategy, chief) as run:
        return _train_in(config, run, data, strategy, chief)


@contextlib.contextmanager
def _features_held(data):
    """Holds the feature folders' locks shared while training reads them, so
    that ``extract --overwrite`` cannot replace shards under a running run
    (it is told to wait instead)."""
    folders = {shards.folder for shards in (data.train, data.held_out) if shards and not files.is_remote(shards.folder)}
    with contextlib.ExitStack() as stack:
        for folder in sorted(folders):
            try:
                stack.enter_context(files.shared(folder, f"an extraction is writing to {folder}; wait for it to "
                                                         "end, then run the same command"))
            except files.FolderBusy as e:
                raise TrainingError(str(e)) from None
        yield


def _open_data(config):
    """Step 1: the shards, checked."""
    try:
        return data_lib.open_run_data(config.train_pattern, config.eval_pattern, config.validation_fraction)
    except data_lib.DataRefused as e:
        raise TrainingError(str(e)) from None


# A batch's features are held about this many times over as they go through
# the input pipeline (a batch prefetched beside the one in use) and the model
# (standardized, dropped out, the recurrent layers' inputs).
BATCH_COPIES = 4


def _check_batch_memory(config, spec):
    """Refuses a ``--batch_size`` whose batches would not fit in this
    machine's memory budget (``--batch_size 100000`` on the demo's features
    grew to 20 GB until the kernel killed the process)."""
    batch_bytes = BATCH_COPIES * config.batch_size * spec.max_frames * spec.feature_dim * 4
    if batch_bytes > memory.budget():
        raise TrainingError(
            f"--batch_size {config.batch_size} x {spec.max_frames} frames x {spec.feature_dim} features (float32, "
            f"held about {BATCH_COPIES} times over by the input pipeline and the model) would take "
            f"{memory.gib(batch_bytes)}, more than {memory.describe_budget()}; lower --batch_size")


def _make_strategy(config):
    try:
        return distribute.make_strategy(config.strategy)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def _run_record(config, data):
    """What run.json says of a run, beside the sessions: the settings that
    define it, the extraction settings ``predict`` needs, and the videos it
    trains, validates and tests on (a resume must find the same)."""
    return {
        "model": dataclasses.asdict(config.model),
        "training": {key: getattr(config, key) for key in DEFINING_SETTINGS},
        "extraction": data_lib.extraction_settings(data.train.manifest),
        "videos": data.video_ids(),
    }


# What model settings that run.json of earlier versions lacks meant then.
_EARLIER_MODEL_SETTINGS = {"last_frame": False}


def _check_same_run(run_dir, stored, record):
    """Refuses to resume a run with settings that define another run, or on
    other videos (shards extracted again with another split would have it
    score held-out videos it trained on)."""
    # run.json of earlier versions kept these settings under "config".
    stored_training = stored.get("training") or {key: stored.get("config", {}).get(key) for key in DEFINING_SETTINGS}
    before = {**_EARLIER_MODEL_SETTINGS, **stored["model"], **stored_training}
    now = {**record["model"], **record["training"]}
    changes = manifest_lib.describe_differences(before, now, sorted(now), "there", "now")
    extraction = manifest_lib.describe_differences(stored["extraction"], record["extraction"],
                                                   manifest_lib.FEATURE_KEYS, "there", "now")
    if extraction:
        changes = "; ".join(filter(None, [changes, f"features extracted differently ({extraction})"]))
    videos = data_lib.describe_data_changes(stored["videos"], record["videos"]) if "videos" in stored else ""
    if videos:
        raise TrainingError(f"{run_dir} holds a run on other videos than the shards hold now ({videos}): the shards "
                            "were extracted again, or videos added? Resuming would mix the two, and could score "
                            "held-out videos the run trained on. Use --restart to start over on these shards, or "
                            "another --run_name")
    if changes:
        raise TrainingError(f"{run_dir} holds a run with other settings ({changes}); resume it with its own "
                            "settings, or use another --run_name, or --restart to replace it")


@contextlib.contextmanager
def _open_run_folder(config, data, strategy, chief):
    """Step 2: the run folder, locked by the chief (the other workers wait for
    it, then read its checkpoints). Yields the run's record (run.json)."""
    record = _run_record(config, data)
    try:
        folder = run_dir_lib.open_run_folder(config.run_dir, config.restart) if chief else contextlib.nullcontext()
        with folder as stored:
            if stored is not None:
                _check_same_run(config.run_dir, stored, record)
            if chief:
                run_dir_lib.keep_backbone_model(config.run_dir, record["extraction"], data.train.folder)
            distribute.barrier(strategy)
            yield stored or {**record, "config": dataclasses.asdict(config)}
    except run_dir_lib.RunFolderError as e:
        raise TrainingError(str(e)) from None


def _use_mixed_precision(config):
    """``--mixed_precision``: on by default when the replicas are GPUs."""
    if config.mixed_precision is not None:
        return config.mixed_precision
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _learning_rate(config, total_steps):
    import keras

    if config.lr_decay == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total_steps)
    return config.learning_rate


def _build(config, spec, schedule, strategy):
    """Step 3: the model, its optimizer and their checkpoint, under the strategy."""
    import keras
    import tensorflow as tf

    mixed = _use_mixed_precision(config)
    with strategy.scope():
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            model = models.build_model(config.model, spec.num_classes, spec.feature_dim, spec.max_frames)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        optimizer = keras.optimizers.Adam(_learning_rate(config, schedule.total_steps))
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    console.warm_up(model)
    return model, optimizer, checkpoint


def _standardize_like_the_training_videos(model, data, config):
    """A new run's model standardizes frames with the statistics of its
    training videos (a resumed run has them in its checkpoint)."""
    statistics = models.training_statistics(data.training_dataset(config.batch_size, config.seed))
    models.adapt_to(model, statistics)
    std = statistics["frames"][1]
    log.info("frames standardized with the statistics of the training videos (median std %.3g)",
             float(sorted(std)[len(std) // 2]))


def _step_of(optimizer):
    """The optimizer's step count (a mirrored variable under a strategy)."""
    return int(optimizer.iterations.numpy())


class _Checkpoints:
    """The latest checkpoints and the best one. Every worker saves them
    (saving runs collectives); the chief's are the run's, the others' go to a
    temporary folder of their own, deleted by ``close``."""

    def __init__(self, checkpoint, run_dir, chief):
        self.run_dir = run_dir
        self._scratch = None if chief else tempfile.mkdtemp(prefix="train_worker_")
        own = run_dir if chief else pathlib.Path(self._scratch)
        self.checkpoint = checkpoint
        self.latest = checkpoints_lib.CheckpointFolder(checkpoint, own / run_dir_lib.CHECKPOINTS, keep=3)
        self.best = checkpoints_lib.CheckpointFolder(checkpoint, own / run_dir_lib.BEST, keep=1)

    def restore(self, optimizer):
        """Step 4: restores the run's newest checkpoint that restores, if
        any; returns the step it resumes from (0 for a new run).

        Raises:
          TrainingError: the run saved checkpoints but none restores.
        """
        run_checkpoints = checkpoints_lib.CheckpointFolder(self.checkpoint, self.run_dir / run_dir_lib.CHECKPOINTS,
                                                           keep=3)
        try:
            restored = run_checkpoints.restore_newest()
        except checkpoints_lib.CheckpointError as e:
            raise TrainingError(str(e)) from None
        if restored is not None:
            log.info("resumed from %s (step %d)", run_checkpoints.path(restored), _step_of(optimizer))
        return _step_of(optimizer)

    def close(self):
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)  # a folder this process made for itself


def _start_session(phase, run, config, step, hyperparameters):
    """The chief's bookkeeping at a phase's start: events logged after the
    checkpoint resumed from are dropped (those steps are done again), and
    the phase's metrics.json so far is read back (returned). For the run's
    own (select) phase also: run.json records the session (and says what
    changed since the last one) and the run's hyperparameters, and an
    HParams experiment of earlier versions is removed from the logdir."""
    for events in ("", *run_dir_lib.EVENT_FOLDERS):
        run_dir_lib.drop_events_after(phase.folder / events, step)
    if hyperparameters is not None:
        _record_session(config.run_dir, run, config, step, phase.schedule, hyperparameters)
    if step == 0:
        return {}
    return files.read_json(phase.metrics_path, "delete it; it is written again at the next checkpoint") or {}


def _record_session(run_dir, run, config, step, schedule, hyperparameters):
    """run.json's record of this session (what changed since the last one is
    said) and of the run's hyperparameters."""
    session = {"from_step": step, "total_steps": schedule.total_steps,
               **{key: getattr(config, key) for key in ADJUSTABLE_SETTINGS}}
    sessions = run.setdefault("sessions", [])
    if sessions:
        changed = {key: (sessions[-1].get(key), value) for key, value in session.items()
                   if key != "from_step" and sessions[-1].get(key) != value}
        if changed:
            log.info("resuming with %s (recorded in %s)", ", ".join(
                f"{key} {before} -> {after}" for key, (before, after) in changed.items()), run_dir_lib.RUN_FILE)
    sessions.append(session)
    run["hparams"] = hyperparameters
    files.write_json_atomic(run_dir / run_dir_lib.RUN_FILE, run)
    summaries.remove_old_experiment(config.logdir)


def _better(candidate, best):
    """Whether validation ``candidate`` beats ``best``: a lower loss.

    Not a higher top-1: on a validation split of ~100 videos top-1 moves in
    steps of 1 % and its noise chose checkpoints of step 50 out of 450 on
    JHMDB (5-fold CV, BENCHMARKS.md section 10: 0.561 selected by top-1,
    0.579 by loss); the loss averages every video's confidence and is far
    steadier."""
    return best is None or candidate["loss"] < best["loss"]


class _Evaluator:
    """Evaluations on the validation and test splits. The validation split
    alone chooses: its lowest-loss evaluation's checkpoint is kept (``best/``) and
    is the model the run exports. The test split is scored at the same
    steps, for the report; nothing is decided on it. Without a validation
    split the final model is the one exported.

    Every worker evaluates (the same weights on the same data give the same
    scores), so that all of them take the same best-checkpoint decision;
    only the chief's board writes."""

    def __init__(self, model, data, batch_size, board, checkpoints, selected, chief):
        self.predict = evaluation.inference_function(model)
        self.variables = model.trainable_variables
        self.splits = {"validation": (data.validation, data.validation_dataset(batch_size)),
                       "test": (data.test, data.held_out_dataset(batch_size))}
        self.class_names = data.class_names
        self.board, self.checkpoints, self.chief = board, checkpoints, chief
        # The chosen model so far: {"step", "chosen_on", "validation", "test"}.
        self.selected = selected

    @property
    def chooses(self):
        return self.splits["validation"][1] is not None

    def projector(self):
        """The embeddings projector of the model as it is now (the exported
        one, once ``_export`` has loaded it)."""
        outputs = {name: evaluation.run_model(self.predict, dataset) if dataset is not None else None
                   for name, (_, dataset) in self.splits.items()}
        self.board.projector(outputs)

    def __call__(self, step, last=False):
        """Scores both splits; returns ``{"step", "validation", "test"}``
        (a split without data scores None), or None without either."""
        scores, outputs = {}, {}
        for name, (split, dataset) in self.splits.items():
            scores[name] = outputs[name] = None
            if dataset is not None:
                scores[name], outputs[name] = evaluation.evaluate(self.predict, dataset, self.class_names)
                scores[name].update(split=split.name, videos=split.videos, classes=split.classes)
        if not any(scores.values()):
            return None
        now = {"step": step, **scores}
        improved = not self.chooses or _better(scores["validation"], (self.selected or {}).get("validation"))
        if improved:
            self.selected = {**now, "chosen_on": str(self.splits["validation"][0]) if self.chooses
                             else "final step (no validation split)"}
            if self.chooses:
                self.checkpoints.best.save(step)
        # Pictures of the models the run may export, never of others: each
        # newly chosen checkpoint (the last drawn is the exported one), or
        # the final model where nothing chooses.
        self.board.evaluation(step, scores, outputs, self.variables, self.selected,
                              draw_images=improved if self.chooses else last)
        if self.chief:
            log.info("step %d: %s", step, "; ".join(
                f"{name} {evaluation.describe_scores(scores[name])}" for name in scores if scores[name])
                + (f" (chosen so far: step {self.selected['step']})" if self.chooses else ""))
        return now


@dataclasses.dataclass(frozen=True)
class _Phase:
    """One training pass of a run.

    ``select``: the run's own pass, on the training videos less the
    validation split, which chooses the checkpoint (by its loss); its
    events, checkpoints and metrics are the run folder's. ``refit``: a fresh
    model trained on every training video (the validation split's too) for
    as many steps as the validation split chose, in the run folder's
    ``refit/`` (events, checkpoints, metrics), whose final model the run
    exports: the validation split chose the length, and no training video
    is left out of the model.
    """

    name: str
    folder: pathlib.Path
    data: data_lib.RunData
    schedule: Schedule

    @property
    def metrics_path(self):
        return self.folder / run_dir_lib.METRICS_FILE


class _Trained(typing.NamedTuple):
    """What a phase leaves: its final metrics, and its model as trained."""

    metrics: dict
    model: typing.Any
    checkpoint: typing.Any
    checkpoints: "_Checkpoints"
    evaluate: "_Evaluator"


def _train_in(config, run, data, strategy, chief):
    """Steps 3 to 9, in a run folder the chief holds."""
    import tensorflow as tf

    select = _Phase("select", config.run_dir, data, Schedule.of(config, data.training_videos))
    hyperparameters = summaries.hparams_record(config, data.train.manifest, select.schedule.total_steps)
    boards = []
    try:
        trained = _run_phase(config, select, run, strategy, chief, boards, hyperparameters)
        metrics = trained.metrics
        refit = _refit_phase(config, data, metrics, chief) if config.refit else None
        if refit:
            distribute.barrier(strategy)  # every worker restores the refit's checkpoints after the chief's clearing
            refitted = _run_phase(config, refit, run, strategy, chief, boards)
            trained = refitted._replace(metrics={**metrics, "refit": _refit_record(refit, refitted.metrics)})
    except KeyboardInterrupt:
        _end(boards, "interrupted")
        raise
    except (tf.errors.DataLossError, evaluation.NonFiniteOutputs) as e:
        _end(boards, "failure")
        raise TrainingError(data_lib.damage_message(e, data_lib.shard_problems([data.train, data.held_out]))) \
            from None
    except TrainingError:
        _end(boards, "failure")
        raise
    except checkpoints_lib.CheckpointError as e:
        _end(boards, "failure")
        raise TrainingError(str(e)) from None
    if not chief:
        _end(boards, "success")
        return {}
    metrics = _fit_baseline(data, config, {**trained.metrics, "exported": _exported(trained.metrics)}, boards[0])
    _export(trained._replace(metrics=metrics), config.run_dir)
    trained.evaluate.projector()
    _end(boards, "success")
    return metrics


def _end(boards, status):
    """Ends the run's session (the first board's) and flushes every board."""
    for board in boards:
        board.end(status)


def _run_phase(config, phase, run, strategy, chief, boards, hyperparameters=None):
    """Steps 3 to 5 for one phase: build, restore, loop (a phase already
    finished does nothing but load its model). Appends its board to ``boards``.

    Returns:
      ``_Trained``.
    """
    import keras

    data, schedule = phase.data, phase.schedule
    top_ks = evaluation.charted_ks(data.spec.num_classes)
    keras.utils.set_random_seed(config.seed)  # a refit starts from the same initial weights as the run did
    batches, input_split = distribute.distribute_input(
        strategy, data.training_dataset(config.batch_size, config.seed), data.train.files)
    log.info("%sinput: %s", "" if phase.name == "select" else f"{phase.name}: ", input_split)

    model, optimizer, checkpoint = _build(config, data.spec, schedule, strategy)
    checkpoints = _Checkpoints(checkpoint, phase.folder, chief)
    step = checkpoints.restore(optimizer)
    metrics = _start_session(phase, run, config, step, hyperparameters) if chief else {}
    board = summaries.Board(phase.folder, chief, data.class_names, top_ks, {"validation": data.validation,
                                                                           "test": data.test},
                            session=hyperparameters is not None)
    boards.append(board)
    if hyperparameters is not None:
        board.start(hyperparameters)
    evaluate = _Evaluator(model, data, config.batch_size, board, checkpoints, metrics.get("selected"), chief)
    try:
        if step == 0:
            _standardize_like_the_training_videos(model, data, config)
        train_step = optimization.make_train_step(model, optimizer, config.clip_norm, top_ks, strategy,
                                                  config.batch_size)
        metrics = _loop(config, phase, step, metrics, model, optimizer, train_step, batches, board, evaluate,
                        checkpoints, chief)
    except KeyboardInterrupt:
        if distribute.workers(strategy) == 1:
            # Steps are atomic, so the state is consistent: keep it. (With
            # several workers a save needs all of them: they resume from the
            # last periodic checkpoint instead.)
            checkpoints.latest.save(_step_of(optimizer))
            log.warning("interrupted at step %d%s; checkpoint saved: run the same command to resume",
                        _step_of(optimizer), "" if phase.name == "select" else f" of the {phase.name}")
        raise
    finally:
        checkpoints.close()
    return _Trained(metrics, model, checkpoint, checkpoints, evaluate)


def _refit_phase(config, data, metrics, chief):
    """The refit phase of a run whose validation split chose a checkpoint
    (else None): every training video, for as many steps as the chosen
    checkpoint had trained; a refit folder made for another length (the run
    was resumed with more steps, and chose anew) is cleared first, by the chief."""
    selected = metrics.get("selected") or {}
    if not data.validation_ids or not selected.get("validation"):
        return None
    folder = config.run_dir / run_dir_lib.REFIT
    every = dataclasses.replace(data, validation_ids=frozenset())
    schedule = dataclasses.replace(Schedule.of(config, every.training_videos), total_steps=selected["step"])
    earlier = files.read_json(folder / run_dir_lib.METRICS_FILE, "delete it: the refit starts over") or {}
    if earlier.get("length") not in (None, selected["step"]):
        log.info("the validation split now chooses step %d (it chose %d): the refit starts over",
                 selected["step"], earlier["length"])
        if chief:
            run_dir_lib.clear_refit(config.run_dir)
    log.info("refit: a new model on all %d training videos (the validation split's %d included), for the %d "
             "steps the validation split chose", every.training_videos, len(data.validation_ids), selected["step"])
    return _Phase("refit", folder, every, schedule)


def _refit_record(phase, metrics):
    """metrics.json's ``refit``: its length, its videos and its final scores."""
    return {"steps": phase.schedule.total_steps, "videos": phase.data.training_videos,
            "test": (metrics.get("final") or {}).get("test")}


def _exported(metrics):
    """metrics.json's ``exported``: what the run exports and its test scores
    (the ones to quote): the refit model where there is one, else the
    checkpoint the validation split chose (or the final one)."""
    selected, refit = metrics.get("selected") or {}, metrics.get("refit")
    if refit:
        return {"model": f"the model refit on all {refit['videos']} training videos for the {refit['steps']} steps "
                         "the validation split chose", "steps": refit["steps"], "test": refit["test"]}
    if not selected:
        return {"model": "the final model (no held-out data)", "steps": metrics.get("step"), "test": None}
    return {"model": f"the checkpoint of step {selected['step']}, chosen on the {selected['chosen_on']}"
            if not selected["chosen_on"].startswith("final") else f"the final model, step {selected['step']}",
            "steps": selected["step"], "test": selected.get("test")}


def _loop(config, phase, step, metrics, model, optimizer, train_step, batches, board, evaluate, checkpoints, chief):
    """Step 5: trains from ``step`` to the end of the phase's schedule;
    returns the final metrics (also in the phase's ``metrics.json``)."""
    import tensorflow as tf

    schedule, data, metrics_path = phase.schedule, phase.data, phase.metrics_path
    final_eval = metrics.get("final")
    interval, session = optimization.Meter(), optimization.Meter()
    batches = iter(batches)
    what = config.run_dir.name if phase.name == "select" else f"{config.run_dir.name} ({phase.name})"
    progress = console.Progress(schedule.total_steps, "step", f"training {what}",
                                config.show_progress and chief, config.progress_seconds if chief else float("inf"),
                                initial=step)
    try:
        while step < schedule.total_steps:
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            started = time.perf_counter()
            inputs, labels = next(batches)
            got_batch = time.perf_counter()
            outputs = {key: float(value) for key, value in train_step(inputs, labels).items()}
            step = _step_of(optimizer)
            if not math.isfinite(outputs["loss"]):
                _stop_at_a_nan(outputs["loss"], step, checkpoints, data)
            for meter in (interval, session):
                meter.add(outputs, config.batch_size, time.perf_counter() - started, got_batch - started)
            progress.update(1)

            if schedule.due(step, schedule.log_every):
                means = interval.means()
                board.training(step, means, float(optimizer.learning_rate.numpy()),
                               float(tf.linalg.global_norm(model.trainable_variables)))
                progress.note(f"loss {means['loss']:.3g}")
                interval = optimization.Meter()
            if schedule.due(step, schedule.eval_every):
                final_eval = evaluate(step, last=step == schedule.total_steps)
            if schedule.due(step, schedule.checkpoint_every):
                checkpoints.latest.save(step)
                metrics = _metrics(phase, step, final_eval, evaluate.selected, session, metrics)
                if chief:
                    files.write_json_atomic(metrics_path, metrics)

        if metrics.get("step") != step:  # killed between saving the checkpoint and metrics.json
            final_eval = evaluate(step, last=True)
            metrics = _metrics(phase, step, final_eval, evaluate.selected, session, metrics)
            if chief:
                files.write_json_atomic(metrics_path, metrics)
    finally:
        progress.close()
    return metrics


def _stop_at_a_nan(loss, step, checkpoints, data):
    """A loss that became NaN or Inf: names the training shards that hold
    such values, or says what to change when the features are finite."""
    kept = f"the last good checkpoint ({checkpoints.latest.latest or 'none yet'}) is kept"
    log.info("the loss became %s: looking for NaN or Inf in the training shards", loss)
    problems = data_lib.shard_problems([data.train])
    if problems:
        raise TrainingError(data_lib.damage_message(f"the loss became {loss} at step {step}; {kept}", problems))
    raise TrainingError(f"the loss became {loss} at step {step}; {kept}. The features are finite: lower "
                        "--learning_rate or --clip_norm and run again.")


def _metrics(phase, step, final_eval, selected, session, previous):
    """A phase's metrics.json: the step; ``selected``, the checkpoint the
    validation split chose (its step, what chose it, its validation and test
    scores); ``final``, the last evaluation; training throughput (of this
    session, or of the previous one if this one trained no step); a refit's
    ``length``, the steps it was made for."""
    throughput = previous.get("train", {})
    if session.steps:
        means = session.means()
        throughput = {key: means[key] for key in ("examples_per_second", "input_wait_fraction")}
    metrics = {"run": str(phase.folder), "step": step, "selected": selected, "final": final_eval, "train": throughput}
    if phase.name != "select":
        metrics["length"] = phase.schedule.total_steps
    return metrics


def _fit_baseline(data, config, metrics, board):
    """Step 7: the pooled-features baseline on the run's own videos
    (``rnn.baseline``), in metrics.json and TensorBoard; returns the metrics."""
    if "baseline" in metrics:  # a finished run, run again
        return metrics
    pooled = {name: baseline.pool(dataset) if dataset is not None else baseline.Pooled(np.zeros((0, 0)),
                                                                                        np.zeros(0, np.int64))
              for name, dataset in (("train", data.training_videos_once(config.batch_size)),
                                    ("validation", data.validation_dataset(config.batch_size)),
                                    ("test", data.held_out_dataset(config.batch_size)))}
    result = baseline.run_baseline(pooled["train"], pooled["validation"], pooled["test"], data.spec.num_classes)
    if result["test"]:
        result["test"].update(split=data.test.name, videos=data.test.videos, classes=data.test.classes)
    log.info("baseline (%s, penalty %g, %s; fitted on %d videos): %s", result["name"],
             result["penalty"], result["chosen_on"], result["videos"],
             f"test top-1 {result['test']['top1']:.3f}" if result["test"] else "no test split to score")
    board.baseline(metrics["step"], result)
    metrics = {**metrics, "baseline": result}
    files.write_json_atomic(config.run_dir / run_dir_lib.METRICS_FILE, metrics)
    return metrics


def _export(trained, run_dir):
    """Step 8: saves the model the run exports atomically (run.json holds its
    class names): the refit's final model, else the checkpoint the
    validation split chose (``--refit=false``), else the final one."""
    import os

    if trained.checkpoints.best.latest:  # kept only where a validation split chooses
        trained.checkpoint.read(trained.checkpoints.best.latest).expect_partial()
    log.info("exporting %s", trained.metrics["exported"]["model"])
    final = run_dir / run_dir_lib.MODEL_FILE
    partial = files.partial_path(final) + ".keras"  # Keras insists on the suffix
    trained.model.save(partial)
    os.replace(partial, final)


def evaluate_run(run_dir, eval_pattern, batch_size=32):
    """Evaluates the model a trained run exported on other shards, without
    training (``train.py --mode eval``). Scoring training shards is allowed,
    and then said: the result's ``scored`` is e.g. "train split (not held-out
    data)".

    Returns:
      The metrics dict, with ``"file"``: where it was also written (one file
      per folder and split scored: ``run_dir.evaluation_file``).

    Raises:
      TrainingError: not a finished run, or shards it cannot use.
    """
    import tensorflow as tf

    run_dir = pathlib.Path(run_dir)
    try:
        run = run_dir_lib.read_run_file(run_dir, run_dir_lib.FINISHED_RUN_REMEDY)
        if run is None:
            raise TrainingError(f"{run_dir} is not a run of train.py (it has no {run_dir_lib.RUN_FILE})")
        model = run_dir_lib.load_final_model(run_dir)
        shards = data_lib.open_shards(eval_pattern)
        data_lib.check_same_extraction(run["extraction"], shards.manifest, f"--eval_pattern {eval_pattern!r}")
    except (run_dir_lib.RunFolderError, data_lib.DataRefused) as e:
        raise TrainingError(str(e)) from None
    try:
        results, _ = evaluation.evaluate(evaluation.inference_function(model),
                                         data_lib.held_out_dataset(shards, batch_size),
                                         run["extraction"]["class_names"])
    except (tf.errors.DataLossError, evaluation.NonFiniteOutputs) as e:
        raise TrainingError(data_lib.damage_message(e, data_lib.shard_problems([shards]))) from None
    split = data_lib.describe_split(shards, len(run["extraction"]["class_names"]))
    recorded = run.get("videos", {})  # runs of earlier versions did not record them
    trained_on = [*recorded.get("train", ()), *recorded.get("validation", ())]
    results = {"eval_pattern": eval_pattern, "scored": data_lib.scored_data(shards, trained_on), "split": split.name,
               "videos": split.videos, "classes": split.classes, **results}
    path = run_dir_lib.evaluation_file(run_dir, shards.folder, "_".join(shards.splits), eval_pattern)
    files.write_json_atomic(path, results)
    return {**results, "file": str(path)}
