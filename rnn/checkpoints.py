"""A folder of a run's checkpoints (``checkpoints/``, ``best/``): saved, the
last few kept, and restored, newest first, falling back past damaged ones.

Why not ``tf.train.CheckpointManager``: it finds and deletes a checkpoint's
files with a glob of the folder's path, so a run under ``--logdir 'r[1]'``
deleted the checkpoints of ``r1``; and ``tf.train.latest_checkpoint``
silently returns nothing when the files it names are gone, which made a
damaged run start again from step 0. Here folders are listed, never
globbed; only names this module writes (``ckpt-N.index``,
``ckpt-N.data-*``, ``ckpt-N_temp/part-*``, ``checkpoint``) are deleted; a
checkpoint that does not restore is reported and the one before it tried.

The ``checkpoint`` file is written in TensorFlow's format, so that
``tf.train.latest_checkpoint`` and TensorBoard read these folders as
theirs.
"""

import contextlib
import logging
import os
import re

from common.console import tensorflow_error_text
from records import files

PREFIX = "ckpt"
STATE_FILE = "checkpoint"
_INDEX = re.compile(rf"{PREFIX}-(\d+)\.index")
_PART = re.compile(r"part-\d{5}-of-\d{5}\.(index|data-\d{5}-of-\d{5})")

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A checkpoint could not be saved or none restores; the message says
    which, why, and what to do."""


def _files_of(folder, step):
    """Names of ``folder``'s files that belong to checkpoint ``step``."""
    stem = f"{PREFIX}-{step}"
    data = re.compile(rf"{re.escape(stem)}\.data-\d{{5}}-of-\d{{5}}")
    return [name for name in _listing(folder) if name == f"{stem}.index" or data.fullmatch(name)]


def _listing(folder):
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _remove_checkpoint(folder, step):
    """Deletes checkpoint ``step``'s files, and what an interrupted or failed
    save of it left: the parts in ``ckpt-N_temp/`` (nothing else there)."""
    for name in _files_of(folder, step):
        files.remove(os.path.join(folder, name))
    temp = os.path.join(folder, f"{PREFIX}-{step}_temp")
    for name in _listing(temp):
        if _PART.fullmatch(name):
            files.remove(os.path.join(temp, name))
    with contextlib.suppress(OSError):  # missing, or it holds a file that is not ours
        os.rmdir(temp)


class CheckpointFolder:
    """The checkpoints of one ``tf.train.Checkpoint`` in one folder.

    Args:
      checkpoint: the ``tf.train.Checkpoint`` saved and restored.
      folder: a local folder (made when first saved to).
      keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, checkpoint, folder, keep):
        self.checkpoint, self.folder, self.keep = checkpoint, str(folder), keep

    def steps(self):
        """Steps of the checkpoints in the folder, oldest first."""
        return sorted(int(match[1]) for match in map(_INDEX.fullmatch, _listing(self.folder)) if match)

    def path(self, step):
        return os.path.join(self.folder, f"{PREFIX}-{step}")

    @property
    def latest(self):
        """Path prefix of the newest checkpoint, or None."""
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def recorded_step(self):
        """The step the ``checkpoint`` file names as the newest, or None
        (no checkpoint was ever saved here)."""
        text = files.read_text(os.path.join(self.folder, STATE_FILE)) or ""
        match = re.search(rf'^model_checkpoint_path: "{PREFIX}-(\d+)"', text, re.MULTILINE)
        return int(match[1]) if match else None

    def save(self, step):
        """Saves the checkpoint as step ``step``, then deletes all but the
        ``keep`` newest.

        Raises:
          CheckpointError: the save failed (a full disk, a read-only folder);
            what it left is deleted, the checkpoints before it are kept.
        """
        import tensorflow as tf

        try:
            os.makedirs(self.folder, exist_ok=True)
            self.checkpoint.write(self.path(step))
        except (OSError, tf.errors.OpError) as error:
            with contextlib.suppress(OSError):
                _remove_checkpoint(self.folder, step)
            kept = f"the last good one ({self.latest}) is kept" if self.latest else "none was saved before it"
            why = "the disk is full" if files.is_disk_full(error) else tensorflow_error_text(error)
            raise CheckpointError(f"could not save the checkpoint of step {step} in {self.folder}: {why}; {kept}. "
                                  "Free some space (or fix the folder) and run the same command to resume.") from None
        steps = self.steps()
        for old in steps[:-self.keep]:
            _remove_checkpoint(self.folder, old)
        kept = [f"{PREFIX}-{s}" for s in steps[-self.keep:]]
        files.write_text_atomic(os.path.join(self.folder, STATE_FILE), "".join(
            [f'model_checkpoint_path: "{kept[-1]}"\n'] + [f'all_model_checkpoint_paths: "{name}"\n' for name in kept]))

    def restore_newest(self):
        """Restores the newest checkpoint that restores whole; a damaged
        newer one (cut short, a file missing) is reported with the steps
        lost, and its files deleted.

        Returns:
          The step restored, or None when the folder never held a checkpoint.

        Raises:
          CheckpointError: checkpoints were saved here (the ``checkpoint``
            file names one) but none restores.
        """
        recorded = self.recorded_step()
        problems = []
        for step in reversed(self.steps()):
            try:
                self.checkpoint.read(self.path(step)).assert_existing_objects_matched()
            except Exception as error:  # noqa: BLE001  a damaged file raises OpError, IndexError, ValueError...
                problems.append(f"{PREFIX}-{step} ({tensorflow_error_text(error)})")
                continue
            if problems:
                newest = recorded if recorded is not None else step
                log.warning("%s cannot be restored: %s; resumed from %s instead (%d steps lost, done again)",
                            self.folder, "; ".join(problems), self.path(step), max(newest - step, 0))
                for damaged in self.steps():
                    if damaged > step:
                        _remove_checkpoint(self.folder, damaged)
            return step
        if problems or recorded is not None:
            found = "; ".join(problems) if problems else "its checkpoint files are gone"
            raise CheckpointError(
                f"{self.folder} recorded a checkpoint of step {recorded} but none restores: {found}. "
                "Put the checkpoint files back and run the same command to resume, or pass --restart to "
                "train this run again from step 0.")
        return None

