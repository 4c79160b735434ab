"""Label new videos with a trained run: the product's end point.

    python -m predict --run tensorboard_logs/gru demo_videos/DiscShrinking/v_DiscShrinking_g02_c01.avi

Each video is decoded and turned into features exactly as the run's training
data was (backbone, weights, precision, frame rate, window: read from the
run's ``run.json``; an int8 run's own copy of the CNN), then classified by
the model the run exported (``model.keras``: the checkpoint its validation
split chose, or its final one without a validation split). Says first which
model and which part of each video it reads; then prints the top-5 labels
with their probabilities, per video. A video whose name starts with
``-`` goes after ``--``: ``python -m predict --run RUN -- -clip.mp4``.
"""

import os
import pathlib
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from common import console  # noqa: E402
from records import files  # noqa: E402
from rnn import run_dir as run_dir_lib  # noqa: E402

flags.DEFINE_string("run", None, "Run folder of a trained model (e.g. tensorboard_logs/gru); its exported model "
                    "(model.keras) labels the videos.")
flags.DEFINE_integer("top", 5, "Labels to print per video (at most the number of classes).", lower_bound=1)
FLAGS = flags.FLAGS


class Predictor:
    """A trained run, ready to label videos.

    Args:
      run_dir: the run folder (holds ``run.json`` and ``model.keras``).


    Raises:
      ValueError: not a finished run, or its model or weights cannot be loaded.
    """

    def __init__(self, run_dir):
        from extract.backbones import NAMED_WEIGHTS, Backbone

        self.run_dir = pathlib.Path(run_dir)
        try:
            run = run_dir_lib.read_run_file(run_dir, run_dir_lib.FINISHED_RUN_REMEDY)
            if run is None:
                raise ValueError(f"{run_dir} has no {run_dir_lib.RUN_FILE}; is it a finished training run?")
            self.model = run_dir_lib.load_final_model(run_dir)
            self.exported = (files.read_json(pathlib.Path(run_dir) / run_dir_lib.METRICS_FILE, "") or {}).get(
                "exported")
            self.extraction = run["extraction"]
            self.class_names = self.extraction["class_names"]
            weights = self.extraction["weights"]
            model = run_dir_lib.backbone_model(run_dir, self.extraction)
            if model is None and weights not in NAMED_WEIGHTS:
                _check_weights_file(weights, self.extraction.get("weights_sha256"))
            self.backbone = Backbone(self.extraction["backbone"], weights, precision=self.extraction["precision"],
                                     model=model)
        except run_dir_lib.RunFolderError as e:
            raise ValueError(str(e)) from None

    def describe(self):
        """Which model labels, and what it reads of each video (one line each)."""
        settings = self.extraction
        which = f" ({self.exported['model']})" if self.exported else ""
        return (f"model: {self.run_dir / run_dir_lib.MODEL_FILE}{which}\n"
                f"each video read as the run's training videos were: its first {settings['seconds']:g} s at "
                f"{settings['fps']:g} frames/s ({settings['max_frames']} frames at most), "
                f"{settings['backbone']} features")

    def __call__(self, path):
        """Class probabilities ``[num_classes]`` of one video.

        Raises:
          extract.video.DecodeError: the video cannot be decoded.
          ValueError: the model's output is not finite (NaN or Inf features).
        """
        probabilities = self._probabilities(path)
        if not np.isfinite(probabilities).all():
            raise ValueError("the model's output is not finite (NaN or Inf): its features or the run's model "
                             "are broken, and no label can be given")
        return probabilities

    def _probabilities(self, path):
        import tensorflow as tf

        from extract.video import decode_frames

        settings = self.extraction
        frames = decode_frames(path, settings["fps"], settings["seconds"], settings["image_size"]).frames
        features = np.zeros((1, settings["max_frames"], settings["feature_dim"]), np.float32)
        features[0, :len(frames)] = self.backbone.video_features(frames)
        logits = self.model({"features": features, "num_frames": np.array([len(frames)], np.int32)})
        return tf.nn.softmax(logits)[0].numpy()


def _check_weights_file(weights, recorded_sha256):
    """The run's features came from a weights file: it must still be there,
    and the same bytes (another file gives other features, and the model
    would label them wrongly, without a sign)."""
    import hashlib

    if not os.path.isfile(weights):
        raise ValueError(f"the run's features came from the weights file {weights}, which is gone")
    with open(weights, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if recorded_sha256 and digest != recorded_sha256:
        raise ValueError(f"the weights file {weights} changed since the run's features were made from it (SHA-256 "
                         f"{digest[:12]}..., not {recorded_sha256[:12]}...): its features would not be the ones the "
                         "model learned; restore the file, or extract and train again with it")


def main(argv):
    from extract.video import DecodeError

    videos = argv[1:]
    if not FLAGS.run or not videos:
        raise console.UsageError("usage: python -m predict --run RUN_DIR VIDEO [VIDEO ...]\n"
                             "(a video named -x.mp4 goes after --: python -m predict --run RUN_DIR -- -x.mp4)")
    run = pathlib.Path(FLAGS.run)
    if not run.is_dir():  # said before TensorFlow loads
        raise console.UsageError(f"--run {run} is {'a file' if run.exists() else 'missing'}, not a run folder "
                                 "(the folder train.py wrote, e.g. tensorboard_logs/gru)")
    missing = [video for video in videos if not os.path.isfile(video)]
    for video in missing:
        print(f"{video}\n    cannot be read: {'a folder' if os.path.isdir(video) else 'no such file'}")
    if len(missing) == len(videos):
        return 1  # nothing to classify: said before the model loads
    console.log_plainly()
    console.import_tensorflow()
    try:
        predictor = Predictor(FLAGS.run)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(predictor.describe())
    top = min(FLAGS.top, len(predictor.class_names))
    if top < FLAGS.top:
        print(f"(top {top} labels per video: the run knows {len(predictor.class_names)} classes)")
    failed = len(missing)
    for video in (video for video in videos if video not in missing):
        try:
            probabilities = predictor(video)
        except (DecodeError, OSError) as e:
            print(f"{video}\n    cannot be read: {e}")
            failed += 1
            continue
        except ValueError as e:
            print(f"{video}\n    cannot be labelled: {e}")
            failed += 1
            continue
        best = probabilities.argsort()[::-1][:top]
        print(video)
        for index in best:
            print(f"    {probabilities[index]:.3f}  {predictor.class_names[index]}")
    return 1 if failed else 0


if __name__ == "__main__":
    console.run_command(main, "python -m predict")
