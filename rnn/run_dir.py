"""The run folder ``<logdir>/<run_name>``: what train.py writes there, and the
rules that keep it from touching anything else.

- A run name is a plain folder name (no ``/``, not ``.`` or ``..``), so a
  run folder is always a direct child of ``--logdir``.
- A folder is a run of train.py when it holds a ``run.json`` written by it.
  A new run starts only in a missing or empty folder; an existing folder
  that is not a run is refused, never written into.
- ``--restart`` deletes the files whose names ``OWN_FILES`` matches exactly
  (the names train.py and TensorFlow's writers give the files of a run:
  ``ckpt-12.index``, not ``ckpt-mybackup.txt``; an event file's name carries
  its writer's time, host and process id) and the subfolders this empties;
  anything else in the folder is kept and listed.
- A run folder is locked (``.lock``) while a process trains or evaluates it.
"""

import contextlib
import itertools
import logging
import os
import pathlib
import re

from common.console import a_few
from records import files
from records import manifest as manifest_lib
from rnn import summaries

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
EVALUATION_FILE = "evaluation.json"  # --mode eval's results, before they were kept per split scored
# --mode eval's results: one file per folder and split scored (evaluation-jhmdb-test.json).
EVALUATION_FILES = r"evaluation-[\w.-]+\.json"
# A copy of the training data's quantized CNN (int8 extractions), for predict.
BACKBONE_MODEL_FILE = manifest_lib.MODEL_NAME
# Every folder of events a run may hold (runs of earlier versions: eval/ for test/).
EVENT_FOLDERS = (summaries.TRAIN_EVENTS, summaries.VALIDATION_EVENTS, summaries.TEST_EVENTS,
                 summaries.LEGACY_EVAL_EVENTS)
CHECKPOINTS, BEST = "checkpoints", "best"
# The refit (rnn.training): its own checkpoints, events and metrics.json.
REFIT = "refit"

# Every file train.py (and TensorFlow's writers for it) writes in a run
# folder: relative paths, matched whole.
_WRITTEN_ATOMICALLY = (RUN_FILE, METRICS_FILE, EVALUATION_FILE, BACKBONE_MODEL_FILE)
# What a training phase writes in its folder (the run folder, or its refit/).
_PHASE_FILES = [
    re.escape(METRICS_FILE), rf"\.{re.escape(METRICS_FILE)}\.\d+\.partial",
    *(rf"{events}/({summaries.EVENT_FILE}|\.rewrite\.\d+\.partial)" for events in EVENT_FOLDERS),
    *(rf"{events}/({name})" for events in EVENT_FOLDERS[1:] for name in summaries.PROJECTOR_FILES),
    *(rf"{folder}/({name.format(prefix='ckpt')})" for folder in (CHECKPOINTS, BEST)
      for name in summaries.CHECKPOINT_FILES),
]
REFIT_FILES = re.compile("|".join(rf"{REFIT}/({pattern})" for pattern in _PHASE_FILES))
OWN_FILES = re.compile("|".join([
    *(re.escape(name) for name in (*_WRITTEN_ATOMICALLY, MODEL_FILE)),
    *(rf"\.{re.escape(name)}\.\d+\.partial" for name in _WRITTEN_ATOMICALLY),  # files.write_text_atomic
    EVALUATION_FILES, rf"\.{EVALUATION_FILES}\.\d+\.partial",
    rf"\.{re.escape(MODEL_FILE)}\.partial\.keras",  # the model, exported under a temporary name
    summaries.EVENT_FILE,  # the run's HParams session, at its root
    *_PHASE_FILES,
    REFIT_FILES.pattern,
]))

log = logging.getLogger(__name__)


class RunFolderError(Exception):
    """The run folder cannot be used as asked; the message says why and what to do."""


def check_run_name(name):
    """Raises ValueError unless ``name`` is a plain folder name (and not the
    logdir's HParams experiment folder)."""
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise ValueError(f"--run_name {name!r} must be a plain folder name (no '/', not '.' or '..')")
    if name == summaries.EXPERIMENT_FOLDER:
        raise ValueError(f"--run_name {name!r} is taken: earlier versions kept the HParams experiment in --logdir's "
                         f"{name}/")


RESUME_REMEDY = "it is not a run of train.py that can be resumed: use another --run_name"
# For commands that use a finished run (predict, train.py --mode eval).
FINISHED_RUN_REMEDY = ("it is not a run of train.py that can be used: give the run folder of a finished train.py "
                       "run (it holds run.json and model.keras)")


def read_run_file(run_dir, remedy=RESUME_REMEDY):
    """The run's ``run.json`` as a dict, or None if the folder holds none.

    Args:
      run_dir: the run folder.
      remedy: what the error says to do (the command's way of choosing another run).

    Raises:
      RunFolderError: a ``run.json`` that train.py did not write, or cannot be parsed.
    """
    try:
        run = files.read_json(pathlib.Path(run_dir) / RUN_FILE, remedy)
    except files.UnreadableFile as e:
        raise RunFolderError(str(e)) from None
    if run is not None and not (isinstance(run, dict) and {"model", "extraction"} <= run.keys()):
        raise RunFolderError(f"{pathlib.Path(run_dir) / RUN_FILE} was not written by train.py; {remedy}")
    if run is not None:
        run["extraction"] = manifest_lib.with_legacy_defaults(run["extraction"])
    return run


def keep_backbone_model(run_dir, extraction, features_folder):
    """Copies the training features' quantized CNN (if they have one) into the
    run folder, so that ``predict`` computes features with the same bytes
    wherever the features folder goes later.

    Raises:
      RunFolderError: the features folder no longer holds that model.
    """
    entry = extraction.get("model")
    if entry is None or manifest_lib.read_model(run_dir, entry) is not None:
        return
    content = manifest_lib.read_model(features_folder, entry)
    if content is None:
        raise RunFolderError(f"{files.join(features_folder, BACKBONE_MODEL_FILE)} is missing or is not the model "
                             f"its manifest names (SHA-256 {entry['sha256'][:12]}...); run the same python -m "
                             "extract command again to restore it")
    files.write_bytes_atomic(pathlib.Path(run_dir) / BACKBONE_MODEL_FILE, content)


def backbone_model(run_dir, extraction):
    """The run's copy of its training features' quantized CNN (bytes), or
    None if those features have none (float32, or older extractions).

    Raises:
      RunFolderError: the copy is missing or damaged.
    """
    if "model" not in extraction:
        return None
    model = manifest_lib.read_model(run_dir, extraction["model"])
    if model is None:
        raise RunFolderError(f"{pathlib.Path(run_dir) / BACKBONE_MODEL_FILE} is missing or damaged; run the "
                             "same train.py command again to copy it from the training features' folder")
    return model


def evaluation_file(run_dir, shards_folder, split, eval_pattern):
    """Where ``--mode eval`` keeps its results for ``split`` of the shards in
    ``shards_folder``: ``evaluation-<folder>-<split>.json``, or with ``-2``,
    ``-3``... when that name holds the results of other shards (a folder of
    the same name elsewhere), so that no evaluation replaces another's."""
    folder = re.sub(r"[^\w.-]+", "_", files.basename(os.path.abspath(shards_folder)) if not files.is_remote(
        shards_folder) else files.basename(shards_folder.rstrip("/"))).strip("._") or "features"
    for number in itertools.count(1):
        path = pathlib.Path(run_dir) / f"evaluation-{folder}-{split}{'' if number == 1 else f'-{number}'}.json"
        try:
            earlier = files.read_json(path, "")
        except files.UnreadableFile:
            continue
        if earlier is None or earlier.get("eval_pattern") == eval_pattern:
            return path


def own_files(run_dir, pattern=OWN_FILES):
    """Relative paths of the files in ``run_dir`` that train.py wrote (see
    ``OWN_FILES``; ``REFIT_FILES`` for the refit's alone)."""
    return [name for name in files.relative_files(run_dir) if pattern.fullmatch(name)
            and os.path.isfile(os.path.join(run_dir, name)) and not os.path.islink(os.path.join(run_dir, name))]


def clear_refit(run_dir):
    """Deletes the refit's own files (a refit made for another length), and
    nothing else."""
    files.delete_own_files(run_dir, own_files(run_dir, REFIT_FILES))


def other_files(run_dir):
    """Relative paths of files and links in ``run_dir`` that train.py did not write."""
    ours = set(own_files(run_dir)) | {files.LOCK_NAME}
    return [name for name in files.relative_files(run_dir) if name not in ours]


@contextlib.contextmanager
def open_run_folder(run_dir, restart):
    """Creates or reopens a run folder and holds its lock.

    Args:
      run_dir: ``<logdir>/<run_name>`` (the name already checked).
      restart: delete the run's own files first (the folder must be a run).

    Yields:
      The run's ``run.json`` dict, or None for a new run.

    Raises:
      RunFolderError: the folder exists but is not a run of train.py, or
        another process is using it.
    """
    run_dir = pathlib.Path(run_dir)
    try:
        files.check_folder_path(run_dir.parent, "--logdir")
        phase_folders = (*EVENT_FOLDERS, CHECKPOINTS, BEST)
        for folder in (run_dir, run_dir / REFIT, *(base / sub for base in (run_dir, run_dir / REFIT)
                                                   for sub in phase_folders)):
            files.check_folder_path(folder, "the run folder" if folder == run_dir else "the run's folder")
    except ValueError as e:
        raise RunFolderError(str(e)) from None
    _refuse_foreign_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with files.exclusive(run_dir, f"another train.py is using {run_dir}; wait for it to end, or use "
                                      "another --run_name"):
            _refuse_foreign_folder(run_dir)  # again, now that no other run can change it
            if restart and read_run_file(run_dir) is not None:
                deleted = files.delete_own_files(run_dir, own_files(run_dir))
                log.info("--restart: deleted %d files train.py had written in %s", len(deleted), run_dir)
                kept = other_files(run_dir)
                if kept:
                    log.warning("--restart kept %d files in %s that train.py did not write: %s", len(kept),
                                run_dir, a_few(kept, 5))
            yield read_run_file(run_dir)
    except files.FolderBusy as e:
        raise RunFolderError(str(e)) from None


def _refuse_foreign_folder(run_dir):
    if not run_dir.exists() and not run_dir.is_symlink():
        return
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} exists and is not a folder; use another --run_name")
    if read_run_file(run_dir) is None and set(os.listdir(run_dir)) - {files.LOCK_NAME}:
        raise RunFolderError(f"{run_dir} already holds files and is not a run of train.py (it has no "
                             f"{RUN_FILE}); train.py never writes into or deletes such a folder: use another "
                             "--run_name or --logdir")


def load_final_model(run_dir):
    """The run's exported ``model.keras``.

    Raises:
      RunFolderError: it is missing, or cannot be loaded (cut short, damaged).
    """
    import keras

    from common import console
    from rnn import models  # noqa: F401  (registers the model's custom layer for loading)

    path = pathlib.Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no {MODEL_FILE}; is it a finished training run? (python train.py ...)")
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # Keras reports a damaged archive in many ways, some misleading ("File not found")
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunFolderError(f"{path} cannot be loaded ({detail}): it may be cut short or damaged. Run the same "
                             "train.py command again: it re-exports the model from the last checkpoint.") from None
    console.warm_up(model)
    return model


def drop_events_after(folder, step):
    """Removes from the event files in ``folder`` what was logged after
    ``step``: a run resumed from the checkpoint of ``step`` logs those steps
    again, and TensorBoard would show both (TensorFlow 2's summary writers do
    not mark a restart). Files are rewritten only if they hold such events,
    each atomically."""
    import tensorflow as tf

    for path in sorted(pathlib.Path(folder).glob("events.out.tfevents.*")):
        if not re.fullmatch(summaries.EVENT_FILE, path.name):  # not a writer's own file: not ours to rewrite
            continue
        records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
        kept = [record for record in records if tf.compat.v1.Event.FromString(record).step <= step]
        if len(kept) == len(records):
            continue
        # Not named like an event file: TensorBoard must never read it.
        partial = str(path.with_name(f".rewrite.{os.getpid()}.partial"))
        with tf.io.TFRecordWriter(partial) as writer:
            for record in kept:
                writer.write(record)
        os.replace(partial, path)
