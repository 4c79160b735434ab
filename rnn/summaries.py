"""What a training run shows in TensorBoard, and where.

Run folder ``<logdir>/<run>/``:

- ``events`` at the run's root: the run's session for the HParams tab: its
  hyperparameters (extraction settings included) and how it ended;
- ``train/``, ``validation/`` and ``test/`` (the test split): scalars under
  the same tags, so that one chart shows all three (``metrics/loss``,
  ``metrics/top1``, ``metrics/topK``), plus ``optim/...`` (learning rate,
  gradient norm before clipping, overall and per layer, parameter norm) and
  ``perf/...`` for training; weight histograms (``weights/...``);
  ``metrics/selected_top1`` in ``validation/`` and ``test/`` (the top-1 of
  the model the run exports, chosen on validation loss alone) and
  ``validation/metrics/selected_step``;
- ``test/`` also (``validation/`` when there is no test split), under
  ``predictions/``: the confusion matrix (counts and row percentages),
  per-class precision and recall, the misclassified held-out clips as
  thumbnails with their true and predicted labels; PR curves, one per class
  with held-out videos; and the embeddings projector (each held-out video's
  final recurrent state and mean CNN feature, with label, prediction and
  thumbnail). Images are drawn where they are looked at: when the exported
  checkpoint changes and at the end of a run, not at every evaluation (at
  101 classes they cost more than the evaluation itself).

TensorBoard's Time Series lists sections by name: ``metrics`` comes first
(is it converging, how good is it on held-out data), then ``optim``,
``perf``, ``predictions`` and ``weights``.

The HParams tab is TensorBoard's own view of the runs' sessions: no
experiment is written, so TensorBoard works out at every request which
hyperparameters differ between the runs it has (those come first, marked
as differing) and which metrics there are (every scalar of ``train/``,
``validation/`` and ``test/``: the ``metrics/`` ones sort first). A written
experiment would go stale: a running TensorBoard keeps the first one it
read, and it would need a folder of its own, which TensorBoard lists as a
run. Whole numbers are recorded as text, so that the table shows ``300``,
not ``300.00``.
"""

import io
import logging
import math
import os
import pathlib

import numpy as np

log = logging.getLogger(__name__)

# Scalar tags, grouped by prefix (TensorBoard makes one section per prefix).
LOSS, TOP1 = "metrics/loss", "metrics/top1"
# The model chosen so far (the one the run exports, chosen on validation
# loss): its top-1 in validation/ and in test/ (the test split), and its step
# in validation/.
SELECTED_TOP1, SELECTED_STEP = "metrics/selected_top1", "metrics/selected_step"
# The pooled-features baseline's test top-1 (rnn.baseline), in test/ at the
# run's last step: beside the model's in HParams.
BASELINE_TOP1 = "metrics/baseline_top1"
LEARNING_RATE, GRADIENT_NORM, PARAMETER_NORM = "optim/learning_rate", "optim/gradient_norm", "optim/parameter_norm"
EXAMPLES_PER_SECOND, INPUT_WAIT = "perf/examples_per_second", "perf/input_wait_percent"
# Per layer: "optim/gradient_norm/<layer>".
GRADIENT_NORM_OF_LAYER = GRADIENT_NORM
# The images, in a section after the metrics.
CONFUSION_MATRIX = "predictions/confusion_matrix"
PER_CLASS = "predictions/per_class_precision_recall"
MISCLASSIFIED = "predictions/misclassified_clips"
# The writers' folders in a run folder (the HParams session goes to its root).
# The test split's folder is named after it, so that TensorBoard's run list
# and chart legends say which split a curve is (runs of earlier versions
# wrote it to "eval/": LEGACY_EVAL_EVENTS).
TRAIN_EVENTS, VALIDATION_EVENTS, TEST_EVENTS = "train", "validation", "test"
LEGACY_EVAL_EVENTS = "eval"
# In --logdir, beside the runs: where earlier versions wrote the HParams
# experiment (removed by the next run; no run may take this name).
EXPERIMENT_FOLDER = "_hparams"
# What TensorFlow's summary writers name their files: time, host, process id,
# a per-process number.
EVENT_FILE = r"events\.out\.tfevents\.\d+\.[^/]+\.\d+\.\d+\.v2"
# What TensorFlow's checkpoint writer names its files for a prefix (PREFIX-N,
# with a PREFIX-N_temp/ folder while saving).
CHECKPOINT_FILES = (r"checkpoint", r"{prefix}-\d+\.index", r"{prefix}-\d+\.data-\d{{5}}-of-\d{{5}}",
                    r"{prefix}-\d+_temp/part-\d{{5}}-of-\d{{5}}\.(index|data-\d{{5}}-of-\d{{5}})")
# The projector's files in test/, as regular expressions (it finds the
# embeddings through the "checkpoint" file, which keeps the folder movable).
PROJECTOR_FILES = (r"projector_config\.pbtxt", r"metadata\.tsv", r"\.metadata\.tsv\.\d+\.partial", r"sprite\.png",
                   *(name.format(prefix=r"embeddings\.ckpt") for name in CHECKPOINT_FILES))


def top_k_tag(k):
    return f"metrics/top{k}"


# --- HParams -------------------------------------------------------------------------------------


def hparams_record(config, manifest, total_steps):
    """The hyperparameters of a run: model, optimization, length (in steps;
    in epochs too when the run was asked for in epochs) and the extraction
    settings of its features (name -> bool, number or string)."""
    import dataclasses

    values = dict(dataclasses.asdict(config.model))  # cell, layers, units, dropout, bidirectional
    values.update({
        "batch_size": config.batch_size, "learning_rate": config.learning_rate, "lr_decay": config.lr_decay,
        "clip_norm": config.clip_norm, "seed": config.seed, "steps": total_steps, "strategy": config.strategy,
    })
    if config.steps is None:
        values["epochs"] = config.epochs
    for key in ("backbone", "weights", "precision", "image_size", "feature_dim", "fps", "seconds", "max_frames",
                "dtype"):
        values[f"features.{key}"] = manifest.get(key)
    values["features.classes"] = len(manifest["class_names"])
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in values.items()}


def write_hparams(writer, run_name, hyperparameters):
    """Starts the run's session for the HParams tab (in the run's root
    writer): its hyperparameters, numbers as text written as they are
    entered (``400``, ``5``, ``0.001``: TensorBoard shows a number with the
    decimals of the longest in its column, ``400.00`` beside ``0.001``), and
    its name as the trial id."""
    from tensorboard.plugins.hparams import api as hparams

    shown = {name: f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else value
             for name, value in hyperparameters.items()}
    with writer.as_default():
        hparams.hparams(shown, trial_id=run_name)
    writer.flush()


def remove_old_experiment(logdir):
    """Deletes the HParams experiment that earlier versions wrote into
    ``<logdir>/_hparams/`` (its event files, recognised by their exact
    names, then the folder if nothing else is in it): TensorBoard would
    show it instead of working the table out from the runs."""
    import re

    from records import files

    folder = pathlib.Path(logdir) / EXPERIMENT_FOLDER
    if not folder.is_dir():
        return
    files.delete_own_files(folder, [name for name in files.relative_files(folder) if re.fullmatch(EVENT_FILE, name)])
    try:
        folder.rmdir()
    except OSError:
        pass  # something of the user's is in it: it stays


def write_session_end(writer, status):
    """Records how the run's session ended: ``"success"``, ``"failure"``, or
    ``"interrupted"`` (shown as Unknown: the run may still be resumed)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hparams_summary

    code = {"success": api_pb2.STATUS_SUCCESS, "interrupted": api_pb2.STATUS_UNKNOWN,
            "failure": api_pb2.STATUS_FAILURE}[status]
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(hparams_summary.session_end_pb(code).SerializeToString(), step=0)
    writer.flush()


# --- Images --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    _pyplot().close(figure)
    return buffer.getvalue()


# Beyond this many classes an image shows only the classes that matter most:
# a picture's cost grows with the square of the classes (700 classes took
# 221 s and 7.9 GB per confusion matrix), and nobody reads 700 rows.
MOST_CLASSES_DRAWN = 120
# How many of them it then shows (the most confused, the worst recall).
CLASSES_SHOWN = 60


def most_confused(confusion, count=CLASSES_SHOWN):
    """Indices of the ``count`` classes with the most mistakes (their videos
    taken for another class, or others' taken for them), in label order."""
    errors = confusion.sum(axis=0) + confusion.sum(axis=1) - 2 * np.diag(confusion)
    return np.sort(np.argsort(-errors, kind="stable")[:count])


def confusion_matrix_png(confusion, class_names, title, most_classes=MOST_CLASSES_DRAWN):
    """The confusion matrix as one annotated image: colour = share of the true
    class's videos (row percentage, with a colour bar), text = count and
    percentage; each row's label gives the class's held-out videos. A class
    with no held-out video gets a grey row saying so, not a row of 0 %s that
    would read as a recall of 0. Every cell is annotated (zeros included) up
    to 30 classes; with more, cells are too small for text and only non-zero
    cells get their count. The figure grows with the classes so that class
    names stay legible (UCF-101's 101 classes: about 2500 x 2400 pixels).
    Beyond ``most_classes`` classes, only the ``CLASSES_SHOWN`` most confused
    are drawn (rows and columns; the title says so), without cell text, so
    that its cost stays that of a 60-class matrix (BENCHMARKS.md section 12).

    Returns:
      PNG bytes.
    """
    plt = _pyplot()
    confusion = np.asarray(confusion, np.int64)
    if most_classes is not None and len(class_names) > most_classes:
        shown = most_confused(confusion)
        title += (f"\nthe {len(shown)} most confused of {len(class_names)} classes (percentages of each row's "
                  "videos, all classes counted)")
        rows_total = confusion.sum(axis=1)[shown]
        return _matrix_png(plt, confusion[np.ix_(shown, shown)], [class_names[i] for i in shown], title,
                           rows_total, annotate=False)
    return _matrix_png(plt, confusion, class_names, title, confusion.sum(axis=1), annotate=True)


def _matrix_png(plt, confusion, class_names, title, rows_total, annotate):
    """``confusion_matrix_png``'s drawing; ``rows_total``: each row's held-out
    videos (percentages are of them); ``annotate``: cell text."""
    classes = len(class_names)
    rows = np.asarray(rows_total, np.int64)[:, None]
    percent = np.divide(100.0 * confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    absent = rows[:, 0] == 0
    cell = 0.55 if classes <= 30 else 0.2  # inches per class
    size = 3.5 + cell * classes
    label_size = 9 if classes <= 30 else 6.5
    figure, axes = plt.subplots(figsize=(size + 1.6, size), dpi=100)
    # Masked cells (the rows of classes without held-out videos) are grey.
    colours = plt.get_cmap("Blues").with_extremes(bad="#d9d9d9")
    image = axes.imshow(np.ma.masked_array(percent, np.repeat(absent[:, None], classes, axis=1)), cmap=colours,
                        vmin=0, vmax=100)
    colour_bar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    colour_bar.set_label("% of the true class's videos")
    ticks = np.arange(classes)
    axes.set_xticks(ticks, class_names, rotation=90, fontsize=label_size)
    axes.set_yticks(ticks, [f"{name} ({int(count)})" for name, count in zip(class_names, rows[:, 0])],
                    fontsize=label_size)
    for label, missing in zip(axes.get_yticklabels(), absent):
        if missing:
            label.set_color("#7f7f7f")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class (held-out videos)")
    note = f"\ngrey rows: {absent.sum()} of {classes} classes have no held-out video" if absent.any() else ""
    axes.set_title(title + note, fontsize=11)
    for (i, j), count in np.ndenumerate(confusion if annotate else np.zeros((0, 0))):
        if absent[i] or (classes > 30 and not count):
            continue
        text = f"{count}\n{percent[i, j]:.0f}%" if classes <= 30 else str(count)
        axes.text(j, i, text, ha="center", va="center", fontsize=8 if classes <= 30 else 5,
                  color="white" if percent[i, j] > 55 else "black")
    for i in np.flatnonzero(absent):
        axes.text((classes - 1) / 2, i, "no held-out videos", ha="center", va="center",
                  fontsize=8 if classes <= 30 else 5, color="#595959")
    figure.tight_layout()
    return _png(figure)


def per_class_png(per_class, title, most_classes=MOST_CLASSES_DRAWN):
    """Held-out precision and recall of every class as horizontal bars,
    classes sorted by recall (worst first), the class's held-out videos in
    its label; classes without held-out videos are left out and counted in
    the title. Beyond ``most_classes`` classes, the ``CLASSES_SHOWN`` of
    worst recall. The legend sits under the title, so that neither hides the
    other at any number of classes."""
    plt = _pyplot()
    names = sorted((name for name in per_class if per_class[name]["support"]),
                   key=lambda name: (per_class[name]["recall"], name))
    missing = len(per_class) - len(names)
    if most_classes is not None and len(per_class) > most_classes:
        title += f"\nthe {CLASSES_SHOWN} of worst recall of {len(names)} classes with held-out videos"
        names = names[:CLASSES_SHOWN]
    recall = [per_class[name]["recall"] for name in names]
    precision = [per_class[name]["precision"] or 0 for name in names]
    labels = [f"{name} ({per_class[name]['support']})" for name in names]
    height = 2.0 + 0.22 * len(names)
    figure, axes = plt.subplots(figsize=(8, height), dpi=100, layout="constrained")
    positions = np.arange(len(names))
    axes.barh(positions - 0.2, recall, height=0.4, label="recall", color="#3b75af")
    axes.barh(positions + 0.2, precision, height=0.4, label="precision", color="#ef8636")
    # A bar of 0 is no bar at all, which reads as missing data: say "0".
    for offset, values, colour in ((-0.2, recall, "#3b75af"), (0.2, precision, "#ef8636")):
        for position, value in zip(positions, values):
            if value == 0:
                axes.text(0.004, position + offset, "0", va="center", ha="left", fontsize=7, color=colour)
    axes.set_yticks(positions, labels, fontsize=7 if len(names) > 30 else 9)
    axes.set_xlim(0, 1)
    axes.set_ylim(max(len(names), 1) - 0.5, -0.5)  # worst recall on top
    axes.set_xlabel("held-out precision / recall (class, held-out videos)")
    note = f"\n{missing} classes with no held-out video are not shown" if missing else ""
    figure.suptitle(title + note, fontsize=11, x=0.02, ha="left")
    # Above the bars, under the title: the layout keeps the three apart.
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=9, frameon=False)
    return _png(figure)


def _shortened(name, limit=30):
    """A file name cut to ``limit`` characters in the middle, with an
    ellipsis (its start and its end, usually the most telling, stay)."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[:keep // 2] + "\u2026" + name[-(keep - keep // 2):]


def thumbnails_png(entries, title, columns=6):
    """A grid of clip thumbnails with a caption each (``[(jpeg bytes or None,
    caption)]``); a short note instead when there are none. The figure is at
    least wide enough for its title, whatever the number of clips."""
    from PIL import Image

    plt = _pyplot()
    if not entries:
        figure, axes = plt.subplots(figsize=(max(6, 0.09 * len(title)), 1.2), dpi=100)
        axes.axis("off")
        axes.text(0.5, 0.5, title, ha="center", va="center", fontsize=11)
        return _png(figure)
    columns = min(columns, len(entries))
    rows = math.ceil(len(entries) / columns)
    width = max(2.4 * columns, 0.09 * len(title) + 0.6)
    figure, grid = plt.subplots(rows, columns, figsize=(width, 2.7 * rows + 0.5), dpi=100, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, (jpeg, caption) in zip(grid.flat, entries):
        if jpeg:
            # Nearest neighbours: a small thumbnail shown larger stays sharp
            # rather than blurred.
            axes.imshow(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), interpolation="nearest")
        else:
            axes.text(0.5, 0.5, "no thumbnail", ha="center", va="center", fontsize=8)
        axes.set_title(caption, fontsize=7)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return _png(figure)


# --- Per-class curves ----------------------------------------------------------------------------


def write_pr_curves(probabilities, labels, class_names, step):
    """One precision-recall curve per class (one-vs-rest, over the held-out
    videos' softmax probabilities), for TensorBoard's PR Curves tab; each
    curve's description says how many held-out videos of its class it rests
    on (with one or two, a "curve" is a few steps)."""
    import tensorflow as tf
    from tensorboard.plugins.pr_curve import summary as pr_curve

    for index, name in enumerate(class_names):
        truth = labels == index
        if not truth.any():
            continue
        summary = pr_curve.pb(f"pr_curve/{name}", truth, probabilities[:, index].astype(np.float32),
                              num_thresholds=51, display_name=name,
                              description=f"{int(truth.sum())} held-out videos of {name} "
                                          f"(of {len(labels)} held-out videos)")
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)


# --- Embeddings projector ------------------------------------------------------------------------


def _sprite(thumbnails):
    """Thumbnails tiled into one square sprite image (PNG bytes) and the side
    of one thumbnail; at most 8192 pixels a side, as the projector wants."""
    from PIL import Image

    from records import schema

    per_row = math.ceil(math.sqrt(len(thumbnails)))
    side = max(8, min(schema.THUMBNAIL_SIZE, 8192 // per_row))
    sheet = Image.new("RGB", (per_row * side, per_row * side))
    for index, jpeg in enumerate(thumbnails):
        tile = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((side, side))
        sheet.paste(tile, ((index % per_row) * side, (index // per_row) * side))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue(), side


def write_projector(folder, states, mean_features, video_ids, labels, predictions, class_names, thumbnails):
    """Writes the embeddings projector's files into ``folder`` (``test/``, or
    ``validation/`` without a test split):
    the held-out videos' final recurrent states and mean CNN features (a
    checkpoint), their metadata (video, true label, prediction, correct) and,
    when every video has a thumbnail, a sprite of them.

    Returns:
      None, or why there is no sprite.
    """
    import re

    import tensorflow as tf
    from tensorboard.plugins import projector

    from records import files

    folder = str(folder)
    stale = re.compile("|".join(PROJECTOR_FILES))
    files.delete_own_files(folder, [name for name in files.relative_files(folder) if stale.fullmatch(name)])
    # A name-based checkpoint, so that the projector lists the tensors by
    # their plain names (an object-based one would call them
    # "final_state/.ATTRIBUTES/VARIABLE_VALUE").
    tensors = {name: tf.Variable(value, name=name) for name, value in
               (("final_state", states), ("mean_cnn_feature", mean_features))}
    tensorflow_log = tf.get_logger()
    level = tensorflow_log.level
    tensorflow_log.setLevel(logging.ERROR)  # the Saver's deprecation notice concerns training checkpoints
    try:
        saver = tf.compat.v1.train.Saver(tensors)
    finally:
        tensorflow_log.setLevel(level)
    saver.save(None, os.path.join(folder, "embeddings.ckpt"), global_step=1)
    rows = [(video_id, class_names[label], class_names[predicted], "yes" if label == predicted else "no")
            for video_id, label, predicted in zip(video_ids, labels, predictions)]
    files.write_tsv(os.path.join(folder, "metadata.tsv"), ("video", "label", "prediction", "correct"), rows)
    config = projector.ProjectorConfig()
    missing_sprite = None
    if all(thumbnails):
        sprite, side = _sprite(thumbnails)
        with open(os.path.join(folder, "sprite.png"), "wb") as f:
            f.write(sprite)
    else:
        missing_sprite = (f"{sum(1 for t in thumbnails if not t)} of {len(thumbnails)} held-out videos have no "
                          "thumbnail (their shards were extracted before thumbnails were stored): the projector "
                          "shows points without pictures")
    for name in tensors:
        embedding = config.embeddings.add()
        embedding.tensor_name = name
        embedding.metadata_path = "metadata.tsv"
        if missing_sprite is None:
            embedding.sprite.image_path = "sprite.png"
            embedding.sprite.single_image_dim.extend([side, side])
    projector.visualize_embeddings(folder, config)
    return missing_sprite


# --- The run's writers ---------------------------------------------------------------------------


class Board:
    """The TensorBoard side of a run: its three writers (``<run>/``,
    ``train/``, ``test/``) and what goes into each. On a worker other than
    the chief every writer is a no-op and no image is drawn.

    Args:
      run_dir: the run folder.
      chief: whether this process writes.
      class_names: class names in label order.
      top_ks: the ks of the charted top-k accuracies (``evaluation.charted_ks``).
      splits: ``{"validation": rnn.data.Split or None, "test": ...}``: what
        each evaluation split covers, for titles.
      session: write the run's HParams session (at ``run_dir``'s root).
    """

    _TRAINING_TAGS = {"loss": LOSS, "top1": TOP1, "gradient_norm": GRADIENT_NORM,
                      "examples_per_second": EXAMPLES_PER_SECOND}

    def __init__(self, run_dir, chief, class_names, top_ks, splits, session=True):
        import tensorflow as tf

        self.run_dir, self.chief, self.session = run_dir, chief, session
        self.class_names, self.top_ks, self.splits = class_names, top_ks, splits
        self.training_tags = {**self._TRAINING_TAGS, **{f"top{k}": top_k_tag(k) for k in top_ks}}
        self.writers = {}
        if chief:
            # The HParams session lives at the run's root; a refit's board
            # (in the run's refit/) writes none, so that its folder holds no
            # events of its own and is not listed as a run.
            self.root = tf.summary.create_file_writer(str(run_dir)) if session else tf.summary.create_noop_writer()
            self.train = tf.summary.create_file_writer(str(run_dir / TRAIN_EVENTS))
            for name, folder in (("validation", VALIDATION_EVENTS), ("test", TEST_EVENTS)):
                if splits.get(name):
                    self.writers[name] = tf.summary.create_file_writer(str(run_dir / folder))
        else:
            self.root = self.train = tf.summary.create_noop_writer()

    def start(self, hyperparameters):
        if self.chief:
            write_hparams(self.root, self.run_dir.name, hyperparameters)

    def training(self, step, means, learning_rate, parameter_norm):
        """Training scalars: the interval's means of the step outputs."""
        import tensorflow as tf

        with self.train.as_default(step=step):
            for key, value in means.items():
                if key == "input_wait_fraction":
                    tf.summary.scalar(INPUT_WAIT, 100.0 * value)
                else:
                    tf.summary.scalar(self.training_tags.get(key, key), value)
            tf.summary.scalar(LEARNING_RATE, learning_rate)
            tf.summary.scalar(PARAMETER_NORM, parameter_norm)

    def _description(self, split):
        """A held-out split's chart description: what the split covers, its
        role (its loss chooses, or it only reports), and the smoothing to use."""
        roles = {"validation": "its loss chooses the exported checkpoint",
                 "test": "scored for the report; it chooses nothing"}
        return f"{self.splits[split]}: {roles[split]}. Held-out curves have few points: set Smoothing to 0."

    def evaluation(self, step, scores, outputs, variables, selected, draw_images):
        """Each split's scalars, and the top-1 of the model chosen so far (the
        one the run exports; its step in validation/); with
        ``draw_images``, the test split's (else the validation split's)
        confusion matrix, per-class precision and recall, PR curves and
        misclassified clips; weight histograms.

        Args:
          step: the training step.
          scores: ``{"validation": metrics or None, "test": ...}``, each
            ``evaluation.metrics_from_logits`` of this evaluation.
          outputs: their ``evaluation.Outputs`` (same keys).
          variables: the model's trainable variables.
          selected: the model chosen so far: ``{"step", "validation", "test"}``.
          draw_images: draw the images (the choice changed, or the run ends).
        """
        import tensorflow as tf

        for name, writer in self.writers.items():
            metrics = scores[name]
            description = self._description(name)
            with writer.as_default(step=step):
                tf.summary.scalar(LOSS, metrics["loss"], description=description)
                tf.summary.scalar(TOP1, metrics["top1"], description=description)
                for k in self.top_ks:
                    tf.summary.scalar(top_k_tag(k), metrics["top_ks"][str(k)], description=description)
                tf.summary.scalar(SELECTED_TOP1, selected[name]["top1"], description=(
                    f"Top-1 of the model chosen so far on the validation split's loss (the one the run exports). "
                    f"{description}"))
                if name == "validation":
                    tf.summary.scalar(SELECTED_STEP, selected["step"], description=(
                        "The step of the checkpoint the validation split's loss chose so far (the one the run "
                        "exports). A step, not a curve: set Smoothing to 0."))
        shown = self._shown
        if self.chief and draw_images and shown:
            metrics = scores[shown]
            chosen = ("the checkpoint chosen so far on the validation loss" if self.splits.get("validation")
                      else "the final model, which the run exports" if self.session
                      else "refit on every training video: the model the run exports")
            title = (f"{self.run_dir.name}, step {step} ({chosen})\n{self.splits[shown]}, "
                     f"top-1 {metrics['top1']:.3f}")
            probabilities = tf.nn.softmax(outputs[shown].logits).numpy()
            with self.writers[shown].as_default(step=step):
                images = {CONFUSION_MATRIX: confusion_matrix_png(metrics["confusion_matrix"], self.class_names,
                                                                 title),
                          PER_CLASS: per_class_png(metrics["per_class"], title),
                          MISCLASSIFIED: self._misclassified_png(step, outputs[shown], probabilities, shown)}
                for tag, png in images.items():
                    tf.summary.image(tag, tf.image.decode_png(png)[None], step=step)
                write_pr_curves(probabilities, outputs[shown].labels, self.class_names, step)
        with self.train.as_default(step=step):
            for variable in variables:
                tf.summary.histogram(f"weights/{variable.path}", variable)

    def _misclassified_png(self, step, outputs, probabilities, split, most=24):
        predictions = outputs.predictions
        wrong = np.flatnonzero(predictions != outputs.labels)
        total = len(outputs.labels)
        if not len(wrong):
            return thumbnails_png([], f"step {step}: no {split} clip is misclassified ({total} clips)")
        shown = wrong[np.argsort(-probabilities[wrong, predictions[wrong]])][:most]
        entries = [(outputs.thumbnails[i], f"{_shortened(os.path.basename(outputs.video_ids[i]))}\n"
                    f"true: {self.class_names[outputs.labels[i]]}"
                    f"\npredicted: {self.class_names[predictions[i]]} ({probabilities[i, predictions[i]]:.2f})")
                   for i in shown]
        return thumbnails_png(entries, f"step {step}: {len(wrong)} of {total} {split} clips misclassified"
                                       + (f" (the {len(shown)} most confident)" if len(wrong) > len(shown) else ""))

    @property
    def _shown(self):
        """The split whose images and projector are drawn: the test split,
        else the validation split (None on a worker or without either)."""
        return next((name for name in ("test", "validation") if name in self.writers), None)

    def projector(self, outputs):
        """The embeddings projector of the ``_shown`` split's videos, in its
        folder (at the end of a run).

        Args:
          outputs: ``{"validation": evaluation.Outputs or None, "test": ...}``.
        """
        import tensorflow as tf

        shown = self._shown
        if not shown:
            return
        folder = {"test": TEST_EVENTS, "validation": VALIDATION_EVENTS}[shown]
        why = write_projector(self.run_dir / folder, outputs[shown].states, outputs[shown].mean_features,
                              outputs[shown].video_ids, outputs[shown].labels, outputs[shown].predictions,
                              self.class_names, outputs[shown].thumbnails)
        if why:
            log.warning("embeddings projector: %s", why)
            with self.writers[shown].as_default(step=0):
                tf.summary.text("projector/no_sprite", why)

    def baseline(self, step, result):
        """The baseline's test top-1 (``rnn.baseline.run_baseline``'s result),
        if it was scored: at step 0 and at ``step``, a level line across the
        test curves' chart span (one point alone draws nothing)."""
        import tensorflow as tf

        if result["test"] and "test" in self.writers:
            description = (f"Test top-1 of the baseline: a {result['name']} on each video's pooled features, "
                           f"fitted on the run's {result['videos']} training videos (its penalty "
                           f"{result['chosen_on']}). Compare with metrics/top1 of the test split.")
            with self.writers["test"].as_default():
                for at in sorted({0, step}):
                    tf.summary.scalar(BASELINE_TOP1, result["test"]["top1"], step=at, description=description)
            self.writers["test"].flush()

    def end(self, status):
        """Records how the run ended (``"success"``, ``"interrupted"``, ``"failure"``) and flushes."""
        if self.chief and self.session:
            write_session_end(self.root, status)
        for writer in (self.root, self.train, *self.writers.values()):
            writer.flush()
