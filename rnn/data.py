"""The data a training run reads: training and held-out shards, checked
against their manifests and against each other before anything is trained.

- Both sets are whole splits of finished extractions (``records.reader``).
- Held-out data was extracted like the training data (``FEATURE_KEYS``:
  backbone, weights, precision, frame rate, class list...).
- Held-out data is not training data: no shard in both, no test-split shard
  among the training data, no video in both (by id, from the shards'
  indexes, which also catches two extractions of the same videos; and by
  file content, which catches the same clips extracted from another root).
- A validation split is carved out of the training shards by group
  (``carve_validation``: whole source movies or UCF ``gNN`` groups, never a
  group on both sides). It alone chooses the model a run exports; the test
  split (the held-out shards) is scored for the report only.

Every refusal is a ``DataRefused`` that says what to do.
"""

import dataclasses
import logging
import math
import typing

from common.console import a_few, tensorflow_error_text
from records import files, groups
from records import manifest as manifest_lib
from records import reader

log = logging.getLogger(__name__)


class DataRefused(ValueError):
    """Shards that a run must not use as given; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Split:
    """What one evaluation split covers, for every line and title that shows its scores.

    Attributes:
      name: ``"validation"`` or ``"test"`` (or e.g. ``"train"`` for ``--mode eval``).
      videos: how many videos it holds.
      classes: how many classes they cover.
      of_classes: how many classes the model knows.
    """

    name: str
    videos: int
    classes: int
    of_classes: int

    def __str__(self):
        return f"{self.name} split ({self.videos} videos, {self.classes} of {self.of_classes} classes)"


@dataclasses.dataclass(frozen=True)
class RunData:
    """The shards of a run.

    Attributes:
      train: the training ``reader.ShardSet``.
      held_out: the held-out (test) ``reader.ShardSet``, or None (no test split).
      validation_ids: the videos of ``train`` held out as the validation
        split (whole groups, ``carve_validation``); empty for none.
    """

    train: reader.ShardSet
    held_out: typing.Optional[reader.ShardSet]
    validation_ids: frozenset = frozenset()

    @property
    def spec(self):
        return self.train.spec

    @property
    def class_names(self):
        return self.train.manifest["class_names"]

    @property
    def training_videos(self):
        """Videos trained on (the training shards' less the validation split's)."""
        return self.train.videos - len(self.validation_ids)

    def training_dataset(self, batch_size, seed):
        """Shuffled, repeated batches of the training shards' videos, less the validation split's."""
        return reader.make_dataset(self.train.files, self.spec, self.train.manifest["dtype"], batch_size,
                                   training=True, seed=seed, leave_out=self.validation_ids or None)

    def training_videos_once(self, batch_size):
        """One pass, in a fixed order, over the training videos (the
        validation split's left out)."""
        return reader.make_dataset(self.train.files, self.spec, self.train.manifest["dtype"], batch_size,
                                   training=False, leave_out=self.validation_ids or None)

    def validation_dataset(self, batch_size):
        """One pass over the validation split, with video ids and thumbnails (or None)."""
        if not self.validation_ids:
            return None
        return reader.make_dataset(self.train.files, self.spec, self.train.manifest["dtype"], batch_size,
                                   training=False, with_details=True, only=self.validation_ids)

    def held_out_dataset(self, batch_size):
        """One pass over the held-out (test) shards, with video ids and thumbnails (or None)."""
        return held_out_dataset(self.held_out, batch_size) if self.held_out else None

    def video_ids(self):
        """``{"train", "validation", "test"}``: the sorted ids of the videos the
        run trains on, validates on and tests on (what run.json records, so
        that a resume or an evaluation can tell whether they changed)."""
        every = self.train.video_ids()
        return {"train": sorted(every - self.validation_ids), "validation": sorted(self.validation_ids),
                "test": sorted(self.held_out.video_ids()) if self.held_out else []}

    @property
    def validation(self):
        """The validation ``Split``, or None."""
        if not self.validation_ids:
            return None
        labels = {label for videos in self.train.videos_by_group().values() for video_id, label in videos
                  if video_id in self.validation_ids}
        return Split("validation", len(self.validation_ids), len(labels), self.spec.num_classes)

    @property
    def test(self):
        """The test ``Split`` (the held-out shards), or None."""
        return describe_split(self.held_out, self.spec.num_classes) if self.held_out else None


def describe_split(shards, num_classes):
    """The ``Split`` that ``shards`` make up (named after their splits)."""
    labels = {video["label"] for index in shards.indexes.values() for video in index["videos"]}
    return Split(" and ".join(shards.splits), shards.videos, len(labels), num_classes)


def carve_validation(train_shards, fraction):
    """The videos of the training shards to hold out for validation: whole
    groups (``records.groups``), about ``fraction`` of each class's groups.
    A class whose share of groups rounds to none gives none, so a small
    training set (the demo's two groups a class) keeps all its videos.

    Returns:
      A frozenset of video ids (empty for ``fraction`` 0, or too few groups).
    """
    if not fraction:
        return frozenset()
    by_group = train_shards.videos_by_group()
    chosen = groups.held_out_groups([(group, label) for group, videos in by_group.items()
                                     for _, label in videos], fraction, at_least_one=False)
    return frozenset(video_id for group in chosen for video_id, _ in by_group[group])


def extraction_settings(manifest):
    """What a run must know of its features (``predict`` makes new ones alike,
    with the same quantized model if there is one)."""
    return {key: manifest.get(key) for key in (*manifest_lib.FEATURE_KEYS, "model") if key in manifest}


def check_same_extraction(expected, manifest, what):
    """Refuses features extracted unlike ``expected`` (on ``FEATURE_KEYS``)."""
    details = manifest_lib.describe_differences(expected, manifest, manifest_lib.FEATURE_KEYS,
                                                "in the training data", "there")
    if details:
        raise DataRefused(f"{what} was extracted differently from the training data ({details})")


def open_shards(pattern):
    """``reader.open_shards``, its refusals as ``DataRefused``; shards that
    hold no video are refused too."""
    try:
        shards = reader.open_shards(pattern)
    except ValueError as e:
        raise DataRefused(str(e)) from None
    _refuse_empty(shards)
    _refuse_misnamed_labels(shards)
    return shards


def _refuse_misnamed_labels(shards):
    misnamed = reader.first_label_names(shards)
    if misnamed:
        names = shards.manifest["class_names"]
        raise DataRefused(f"the class names of {manifest_lib.manifest_path(shards.folder)} are not the records': "
                          + a_few([f"label {label} is {name!r} in the records, "
                                   f"{names[label] if 0 <= label < len(names) else 'no class'!r} in the manifest"
                                   for label, name in misnamed], 2)
                          + ". Was its class_names list edited or reordered? A model trained on it would give "
                          "videos the wrong names: restore it (python -m records inspect names every label)")


def _refuse_empty(shards):
    if shards.videos:
        return
    failed = sum(shards.manifest["splits"][split].get("failed", 0) for split in shards.splits)
    why = (f": all {failed} of its videos failed to extract ({files.join(shards.folder, 'errors.tsv')} says why)"
           if failed else "")
    raise DataRefused(f"the {' and '.join(shards.splits)} split of {shards.folder} holds no videos{why}; "
                      "extract videos into it, or give another pattern")


def _labels(shards, only=None, leave_out=frozenset()):
    """The labels of ``shards``' videos (of those in ``only``, less ``leave_out``)."""
    return {label for videos in shards.videos_by_group().values() for video_id, label in videos
            if (only is None or video_id in only) and video_id not in leave_out}


# A held-out split that covers fewer than this share of the trained classes
# gets a warning: a top-1 over 3 of 29 classes is not the model's top-1.
FEW_CLASSES_SHARE = 0.5
_FEW_CLASSES_ADVICE = {
    "validation": "Raise --validation_fraction, or give classes more groups (a class needs 2 or more to lend one).",
    "test": "Extract with a larger --test_fraction, or give classes more groups: a class whose clips all come "
            "from one group (one video, one gNN, one source movie) is never held out.",
}


def _check_classes(data):
    """Refuses a training set of fewer than 2 classes (every score would be
    1.0 and mean nothing); warns for a held-out split covering few of the
    trained classes, and for evaluated classes without training videos
    (their videos cannot be classified right)."""
    trained = _labels(data.train, leave_out=data.validation_ids)
    names = data.class_names
    if len(trained) < 2:
        raise DataRefused(f"the training videos of {data.train.folder} cover only {len(trained)} class "
                          f"({a_few(names[label] for label in sorted(trained))}): a classifier needs at least 2; "
                          "give videos of more classes")
    for split, labels in (("validation", _labels(data.train, only=data.validation_ids) if data.validation_ids
                           else set()), ("test", _labels(data.held_out) if data.held_out else set())):
        if labels and len(labels) < FEW_CLASSES_SHARE * len(trained):
            log.warning("the %s split covers only %d of the %d trained classes: its scores say little about the "
                        "others. %s", split, len(labels), len(trained), _FEW_CLASSES_ADVICE[split])
        untrained = sorted(labels - trained)
        if untrained:
            log.warning("%d classes of the %s split have no training videos (%s): their videos are scored, and "
                        "cannot be classified right; extract more videos of them", len(untrained), split,
                        a_few(names[label] for label in untrained))


def open_run_data(train_pattern, eval_pattern, validation_fraction=0.0):
    """The training and held-out shards of a run, checked, and the
    validation split carved from the training shards.

    Returns:
      ``RunData``; its ``held_out`` is None (with a notice) when the
      extraction wrote no test split or ``eval_pattern`` is empty.

    Raises:
      DataRefused: see the module docstring.
    """
    train_shards = open_shards(train_pattern)
    validation_ids = carve_validation(train_shards, validation_fraction)
    data = RunData(train_shards, _open_held_out(eval_pattern, train_shards), validation_ids)
    _check_classes(data)
    if validation_ids:
        log.info("%s, carved from the training data by group; it chooses the exported checkpoint, the test "
                 "split is scored for the report only", data.validation)
    elif validation_fraction:
        log.warning("no validation split: at --validation_fraction %g no class has enough groups to give one "
                    "(a class needs about %d or more); the final model is exported", validation_fraction,
                    math.ceil(0.5 / validation_fraction))
    return data


def _open_held_out(eval_pattern, train_shards):
    try:
        shards = reader.open_shards(eval_pattern)
        _refuse_empty(shards)
        _refuse_misnamed_labels(shards)
    except reader.NoShards as e:
        same_folder = files.same_folder(files.dirname(eval_pattern), train_shards.folder)
        if eval_pattern and (not same_folder or "test" in train_shards.manifest["splits"]):
            raise DataRefused(f"{e}: give --eval_pattern the held-out shards, or --eval_pattern='' to train "
                              "without held-out evaluation") from None
        log.warning("no held-out data: %s; training without held-out evaluation (no eval scores, no best "
                    "checkpoint)", f"the extraction in {train_shards.folder} wrote no test split"
                    if eval_pattern else "--eval_pattern is empty")
        return None
    except ValueError as e:
        raise DataRefused(str(e)) from None
    check_same_extraction(extraction_settings(train_shards.manifest), shards.manifest,
                          f"--eval_pattern {eval_pattern!r}")
    _refuse_leaks(train_shards, shards)
    return shards


def _refuse_leaks(train_shards, eval_shards):
    """Held-out data must not be training data (see the module docstring)."""
    def pattern(shards, split):
        return f"'{files.join(shards.folder, split)}-*.tfrecord'"

    shared = sorted(set(train_shards.files) & set(eval_shards.files))
    if shared:
        raise DataRefused(f"--train_pattern and --eval_pattern both match {a_few(shared)}: held-out scores "
                          f"would be scores on training data. Use --train_pattern {pattern(train_shards, 'train')} "
                          f"and --eval_pattern {pattern(eval_shards, 'test')}.")
    if "test" in train_shards.splits:
        raise DataRefused(f"--train_pattern {train_shards.pattern!r} matches the test split's shards "
                          f"({a_few(name for name in train_shards.indexes if name.startswith('test-'))}): training "
                          f"on held-out videos makes every held-out score meaningless. Use --train_pattern "
                          f"{pattern(train_shards, 'train')}.")
    both = sorted(train_shards.video_ids() & eval_shards.video_ids())
    if both and files.same_folder(train_shards.folder, eval_shards.folder):
        raise DataRefused(f"{len(both)} videos are in both the train and the test split of {train_shards.folder} "
                          f"({a_few(both)}): the extraction put them in both (a split list naming them as train "
                          "and as test?). Fix the lists and extract again (--overwrite); held-out scores would be "
                          "scores on training data.")
    if both:
        raise DataRefused(f"{len(both)} videos are in both the training and the held-out data ({a_few(both)}): "
                          f"--eval_pattern {eval_shards.pattern!r} holds videos that --train_pattern "
                          f"{train_shards.pattern!r} trains on (two extractions of the same videos?). Evaluate "
                          "on a test split extracted with the training data.")
    same_content = _same_content(train_shards, eval_shards)
    if same_content:
        raise DataRefused(f"{len(same_content)} held-out videos of {eval_shards.folder} are training videos of "
                          f"{train_shards.folder} under another path (the same file content): "
                          f"{a_few(f'{held_out} = {trained}' for held_out, trained in same_content)}. Held-out "
                          "scores would be scores on training data: hold out videos of one extraction "
                          f"(--eval_pattern {pattern(train_shards, 'test')}).")


def _same_content(train_shards, eval_shards):
    """``[(held-out id, training id)]`` of held-out videos whose file content
    (``files.content_fingerprint``, recorded by the extractor) is a training
    video's under another id."""
    def fingerprints(shards):
        return [(video["content"], video["video_id"]) for index in shards.indexes.values()
                for video in index["videos"] if video.get("content")]

    trained = dict(fingerprints(train_shards))
    return sorted((video_id, trained[content]) for content, video_id in fingerprints(eval_shards)
                  if content in trained and trained[content] != video_id)


def held_out_dataset(shards, batch_size):
    """One pass over ``shards``, with the video ids and thumbnails."""
    return reader.make_dataset(shards.files, shards.spec, shards.manifest["dtype"], batch_size, training=False,
                               with_details=True)


def scored_data(shards, trained_on=None):
    """What an evaluation of ``shards`` scored: "test split", or e.g. "train
    split (not held-out data)", or "test split (8 of its 16 videos were
    trained on: not held-out data)" when it holds videos of ``trained_on``
    (the ids a run trained and validated on, if known)."""
    splits = " and ".join(shards.splits)
    if shards.splits != ["test"]:
        return f"{splits} split (not held-out data)"
    seen = shards.video_ids() & set(trained_on or ())
    if seen:
        return f"{splits} split ({len(seen)} of its {shards.videos} videos were trained on: not held-out data)"
    return f"{splits} split"


def describe_data_changes(before, now):
    """How a run's videos (``RunData.video_ids``, as run.json recorded them)
    differ from what its shards hold now, or "" if they do not."""
    changes = []
    trained = set(before["train"]) | set(before["validation"])
    for split in ("train", "validation", "test"):
        added, gone = sorted(set(now[split]) - set(before[split])), sorted(set(before[split]) - set(now[split]))
        if added or gone:
            change = (f"its {split} split gained {len(added)} videos and lost {len(gone)}"
                      f" (e.g. {a_few(added or gone, 2)})")
            if split == "test" and trained & set(added):
                change += f"; {len(trained & set(added))} of the new test videos were trained on"
            changes.append(change)
    return "; ".join(changes)


def shard_problems(shard_sets):
    """``[(file, problem)]`` of the shards behind a read error or a NaN (every
    record of the given ``reader.ShardSet`` objects is read again; None ones
    are skipped)."""
    problems = []
    for shards in filter(None, shard_sets):
        problems += reader.scan_shards(shards.files, shards.spec, shards.manifest["dtype"])
    return problems


def damage_message(cause, problems):
    """What to say after a read error or a NaN: its cause (a TensorFlow error
    or a sentence), the shards ``shard_problems`` found, and what to do."""
    cause = tensorflow_error_text(cause)
    if not problems:
        return f"reading the shards failed: {cause}"
    named = "; ".join(f"{file}: {problem}" for file, problem in problems[:3])
    return (f"{cause}: {named}. Delete these shards and run the same python -m extract command again to extract "
            "them anew (it redoes missing shards), then train again.")
