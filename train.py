"""Stage 2: train a GRU/LSTM video classifier on extracted features.

    python -m extract --demo                      # features/ from 24 synthetic videos
    python train.py --cell gru --steps 300        # about 40 s on 2 CPU cores
    tensorboard --logdir tensorboard_logs         # then open http://localhost:6006

On the demo, expect held-out top-1 of 1.0 (at least 0.9) after 300 steps with
either cell; ``tensorboard_logs/gru/metrics.json`` says so. Running the same
command again resumes from the last checkpoint (``--restart`` starts over);
``--mode eval`` evaluates a finished run on other shards:

    python train.py --mode eval --run_name gru --eval_pattern 'other/test-*.tfrecord'
"""

# This file is the command line: its flags, signals and what it prints. The
# run itself, step by step, is rnn.training.train (data, run folder, build,
# restore, loop, export); the run folder <logdir>/<run_name> is described in
# rnn.run_dir and rnn.summaries.

import json
import logging
import os
import shlex
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from common import console  # noqa: E402
from rnn import distribute  # noqa: E402
from rnn.configs import (CELL_NAMES, DEFAULT_FEATURES, ModelConfig, TrainConfig, default_run_name,  # noqa: E402
                         shard_patterns)

# TensorFlow is imported once the flags are read (in main): --help and a
# usage error answer before it loads.


flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (or resume), or eval: evaluate the model a trained "
                  "run exported on --eval_pattern without training (the results go to the run folder's "
                  "evaluation-<folder>-<split>.json).")
flags.DEFINE_bool("json", False, "With --mode eval: print the results as JSON instead of a summary.")
flags.DEFINE_enum("cell", ModelConfig.cell, list(CELL_NAMES), "Recurrent cell.")
flags.DEFINE_integer("layers", ModelConfig.layers, "Stacked recurrent layers.")
flags.DEFINE_integer("units", ModelConfig.units, "Units per recurrent layer (per direction).")
flags.DEFINE_float("dropout", ModelConfig.dropout, "Dropout between recurrent layers and before the classifier "
                   "(on layer outputs, not recurrent connections, which keeps the cuDNN kernel usable).")
flags.DEFINE_float("input_dropout", ModelConfig.input_dropout, "Dropout on the frame features (after their "
                   "standardization with the training videos' statistics).")
flags.DEFINE_bool("pooled", ModelConfig.pooled, "Also give the classifier each video's mean and standard "
                  "deviation of its frames' features, beside the recurrent state.")
flags.DEFINE_float("classifier_l2", ModelConfig.classifier_l2, "L2 penalty on the classifier's weights.")
flags.DEFINE_bool("last_frame", ModelConfig.last_frame, "Also give the classifier the features of each video's "
                  "true last frame (a streaming video CNN's have seen the whole video).")
flags.DEFINE_bool("bidirectional", ModelConfig.bidirectional, "Also read each video backwards.")
flags.DEFINE_string("features", None, "The folder an extraction wrote (python -m extract --output_dir): its "
                    f"train-* shards are trained on, its test-* shards held out. Default: {DEFAULT_FEATURES}.")
flags.DEFINE_string("train_pattern", None, "Training shards, instead of --features' (a glob pattern of shards "
                    "from python -m extract); the test-* shards beside them are held out unless --eval_pattern "
                    "says otherwise.")
flags.DEFINE_string("eval_pattern", None, "Held-out shards, evaluated during training (and by --mode eval). "
                    "Default: the test-* shards of --features, or beside --train_pattern; '' for none.")
flags.DEFINE_float("validation_fraction", TrainConfig.validation_fraction, "Share of each class's groups of "
                   "training videos held out as the validation split, whose loss chooses the checkpoint, i.e. how "
                   "many steps to train (whole groups: a UCF-101 gNN, an HMDB source movie). The test split only "
                   "reports. 0: no validation split; the final model is exported.")
flags.DEFINE_bool("refit", TrainConfig.refit, "After the validation split chose the checkpoint, train a new model "
                  "on every training video (the validation split's too) for that many steps, and export it "
                  "(on JHMDB, 1.5-2.7 points of top-1 over the chosen checkpoint). --refit=false exports the "
                  "chosen checkpoint itself.")
flags.DEFINE_string("logdir", TrainConfig.logdir, "TensorBoard root; each run gets a subfolder.")
flags.DEFINE_string("run_name", None, "Run subfolder of --logdir (default: the cell name, e.g. gru, and for "
                    "training shards outside features/ their folder's name first, e.g. jhmdb_gru).")
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
    try:
        train_pattern, eval_pattern = shard_patterns(FLAGS.features, FLAGS.train_pattern, FLAGS.eval_pattern)
        config = TrainConfig(
            model=ModelConfig(cell=FLAGS.cell, layers=FLAGS.layers, units=FLAGS.units,
                                     dropout=FLAGS.dropout, input_dropout=FLAGS.input_dropout,
                                     pooled=FLAGS.pooled, classifier_l2=FLAGS.classifier_l2,
                                     last_frame=FLAGS.last_frame,
                                     bidirectional=FLAGS.bidirectional),
            train_pattern=train_pattern, eval_pattern=eval_pattern,
            validation_fraction=FLAGS.validation_fraction, refit=FLAGS.refit, logdir=FLAGS.logdir,
            run_name=FLAGS.run_name or default_run_name(FLAGS.cell, train_pattern), batch_size=FLAGS.batch_size,
            learning_rate=FLAGS.learning_rate,
            lr_decay=FLAGS.lr_decay, clip_norm=FLAGS.clip_norm, epochs=FLAGS.epochs, steps=FLAGS.steps,
            eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every,
            seed=FLAGS.seed, restart=FLAGS.restart, strategy=FLAGS.strategy,
            mixed_precision=FLAGS.mixed_precision, show_progress=FLAGS.progress,
            progress_seconds=FLAGS.progress_seconds)
    except ValueError as e:
        raise console.UsageError(str(e)) from None

    from records import reader

    # A mistyped path is said before TensorFlow loads. Evaluation reads only
    # --eval_pattern; training needs its training shards (the test split may
    # be absent).
    checked_flag = "eval_pattern" if FLAGS.mode == "eval" else "train_pattern"
    try:
        reader.list_files(getattr(config, checked_flag))
    except reader.NoShards as e:
        raise console.UsageError(f"--{checked_flag}: {e}") from None
    console.log_plainly()
    console.import_tensorflow()  # before Keras (imported by rnn.models) prints TensorFlow's start-up noise
    from rnn.training import STOP_REQUESTED, TrainingError, evaluate_run, train

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
            if FLAGS.json:
                print(json.dumps({key: results[key] for key in ("eval_pattern", "scored", "videos", "classes",
                                                                "top1", "k", "top_k", "loss", "file")}, indent=2))
            else:
                print(_evaluation_report(config.run_dir, results))
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
    print(f"run: {config.run_dir}, {metrics['step']} steps\n{_report(metrics)}\n"
          f"training: {metrics['train'].get('examples_per_second', 0):.0f} examples/s\n"
          f"tensorboard --logdir {shlex.quote(config.logdir)}")
    return 0


def _evaluation_report(run_dir, results):
    """``--mode eval``'s summary, in the words of training's."""
    from rnn import evaluation

    return (f"run: {run_dir}, its exported model\n"
            f"  scored {results['scored']} of {results['eval_pattern']} ({results['videos']} videos, "
            f"{results['classes']} classes): {evaluation.describe_scores(results)}\n"
            f"results: {results['file']}")


def _report(metrics):
    """What the validation split chose, what the run exports and what it
    scores on the test split, and beside that score the pooled-features
    baseline's."""
    from rnn import evaluation

    selected, exported, baseline = metrics.get("selected"), metrics["exported"], metrics.get("baseline")
    lines = []
    if selected and selected.get("validation"):
        scores = selected["validation"]
        lines.append(f"the {selected['chosen_on']} chose step {selected['step']}: validation "
                     f"{evaluation.describe_scores(scores)}")
    lines.append(f"exported: {exported['model']}")
    test = exported.get("test")
    if test:
        lines.append(f"  test ({test['videos']} videos, {test['classes']} classes): "
                     f"{evaluation.describe_scores(test)}")
    elif not selected:
        lines.append("  no held-out evaluation (no validation or test data)")
    if baseline and baseline["test"] and test:
        model, pooled = test["top1"], baseline["test"]["top1"]
        gap = (f"the model is {abs(model - pooled) * 100:.1f} points {'above' if model > pooled else 'below'} it"
               if model != pooled else "level with the model")
        lines.append(f"  baseline, {baseline['name']} on the same videos: test top-1 {pooled:.3f} ({gap})")
    return "\n".join(lines)


if __name__ == "__main__":
    console.run_command(main, "python train.py")
