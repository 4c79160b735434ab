"""The settings of a training run, as plain objects: what ``train.py``'s
flags fill in and library code takes. Nothing here imports TensorFlow, so
that ``train.py --help`` and a usage error answer at once."""

import dataclasses
import os
import pathlib
import re
import typing

from common import console
from common.console import check_number
from records import files
from rnn import distribute, run_dir as run_dir_lib

CELL_NAMES = ("gru", "lstm")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the classifier.

    Attributes:
      cell: ``"gru"`` or ``"lstm"``.
      layers: stacked recurrent layers.
      units: units per layer (per direction).
      dropout: dropout rate between layers and before the classifier
        (applied to layer outputs, so the cuDNN kernel is kept).
      input_dropout: dropout rate on the (standardized) frame features
        the recurrent layers read.
      pooled: also give the classifier each video's mean and standard
        deviation over its real frames (standardized over the training
        videos), beside the recurrent state.
      classifier_l2: L2 penalty on the classifier's weights (added to the
        training loss, per example).
      last_frame: also give the classifier the (standardized) features of
        each video's true last frame: a streaming video CNN's features there
        have seen the whole video.
      bidirectional: also read each video backwards.
    """

    # The defaults were chosen by 5-fold grouped cross-validation on 688 real
    # JHMDB clips (BENCHMARKS.md, sections 10 and 11): 688 clips overfit a
    # 2x256 model; the pooled path with an L2 penalty is what brings the
    # model near a mean+std logistic regression on the same features, and
    # one layer scored at or above two on every fold (--layers 2 and more
    # stay there for larger datasets). On MoViNet's features, a penalty of
    # 0.01 (0.003 before) and the last frame's features beside the pooled
    # ones (they have seen the whole video) each added about a point.
    cell: str = "gru"
    layers: int = 1
    units: int = 128
    dropout: float = 0.5
    input_dropout: float = 0.5
    pooled: bool = True
    classifier_l2: float = 0.01
    last_frame: bool = True
    bidirectional: bool = False

    def __post_init__(self):
        if self.cell not in CELL_NAMES:
            raise ValueError(f"unknown --cell {self.cell!r}; choose one of {', '.join(CELL_NAMES)}")
        check_number("layers", self.layers, minimum=1)
        check_number("units", self.units, minimum=1)
        check_number("dropout", self.dropout, minimum=0, below=1)
        check_number("input_dropout", self.input_dropout, minimum=0, below=1)
        check_number("classifier_l2", self.classifier_l2, minimum=0)


DEFAULT_FEATURES = "features"
TRAIN_SHARDS = "train-*.tfrecord"
TEST_SHARDS = "test-*.tfrecord"


def shard_patterns(features=None, train_pattern=None, eval_pattern=None):
    """The training and held-out shard patterns that ``train.py``'s flags mean.

    ``--features DIR`` is an extraction's folder: its ``train-*`` shards are
    trained on and its ``test-*`` shards held out. Given ``--train_pattern``
    alone, the held-out shards are the ``test-*`` shards beside the training
    ones; ``--eval_pattern`` names others ('' for none).

    Raises:
      ValueError: ``--features`` and ``--train_pattern`` both given.
    """
    if features is not None and train_pattern is not None:
        raise ValueError(f"--features {features} and --train_pattern {train_pattern} both name the training "
                         "shards: give one")
    if train_pattern is None:
        train_pattern = files.join(features or DEFAULT_FEATURES, TRAIN_SHARDS)
    if eval_pattern is None:
        eval_pattern = files.join(files.dirname(train_pattern) or ".", TEST_SHARDS) if features is None \
            else files.join(features, TEST_SHARDS)
    return train_pattern, eval_pattern


def default_run_name(cell, train_pattern):
    """``train.py``'s run name when none is given: the cell (``gru``) for
    training shards in a folder named ``features`` (the default), else the
    folder's name too (``jhmdb_gru``), so that runs on two datasets do not
    meet in one run folder."""
    folder = files.basename(os.path.abspath(files.dirname(train_pattern) or ".")) \
        if not files.is_remote(train_pattern) else files.basename(files.dirname(train_pattern))
    name = re.sub(r"[^\w.-]+", "_", folder).strip("._")
    return cell if name in ("", DEFAULT_FEATURES) else f"{name}_{cell}"


# Bounds of the run's length and intervals: a billion steps is years of
# training, and larger numbers overflowed the time estimate and the schedule.
MOST_STEPS = {"steps": 10 ** 9, "epochs": 10 ** 6, "eval_every": 10 ** 9, "checkpoint_every": 10 ** 9,
              "log_every": 10 ** 9}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (the flags of ``train.py``)."""

    model: ModelConfig = ModelConfig()
    train_pattern: str = files.join(DEFAULT_FEATURES, TRAIN_SHARDS)
    eval_pattern: str = files.join(DEFAULT_FEATURES, TEST_SHARDS)
    validation_fraction: float = 0.15
    # After the validation split chose the checkpoint: train a new model on
    # every training video for that many steps, and export it.
    refit: bool = True
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
            console.check_number(flag, getattr(self, flag), above=0, optional=True, maximum=MOST_STEPS.get(flag))
        console.check_number("progress_seconds", self.progress_seconds, minimum=0)
        console.check_number("validation_fraction", self.validation_fraction, minimum=0, below=0.5)
        if self.lr_decay not in ("none", "cosine"):
            raise ValueError(f"unknown --lr_decay {self.lr_decay!r}; use none or cosine")
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(f"unknown --strategy {self.strategy!r}; choose one of {', '.join(distribute.STRATEGIES)}")

    @property
    def run_dir(self):
        return pathlib.Path(self.logdir) / (self.run_name or self.model.cell)
