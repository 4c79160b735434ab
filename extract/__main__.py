"""Stage 1: videos -> padded per-frame CNN features in sharded TFRecords.

    python -m extract --videos DIR --output_dir features
    python -m extract --demo          # synthetic videos, then the same

DIR holds one subfolder per class. The output folder gets
``train-00000-of-000NN.tfrecord`` (and ``test-...``) shards, ``manifest.json``
(settings, class names, counts) and ``errors.tsv`` (videos that could not be
decoded, with the reason). Run the same command again to resume after an
interruption; on a finished output it returns in seconds.

Exit status: 0 when every video was extracted, 3 when some could not be
(they are listed in errors.tsv), 1 on a usage error, a refused output folder
or a full disk, 130 when interrupted (Ctrl-C or SIGTERM).
"""

import os
import pathlib
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the way

from absl import flags  # noqa: E402

from common import console  # noqa: E402
from extract import backbones, dataset, extraction, local_runner, plan, precision_choice  # noqa: E402
from records import files, schema  # noqa: E402

_DEFAULTS = plan.ExtractConfig()

flags.DEFINE_string("videos", None, "Folder of videos, one subfolder per class (the class name). "
                    "Subfolders below a class folder are allowed.")
flags.DEFINE_integer("class_depth", 1, "Depth of the class folders below --videos: 1 for VIDEOS/Class/clip.avi "
                     "(UCF-101), 2 for VIDEOS/source/Class/clip.avi (the class is then the second folder).")
flags.DEFINE_string("output_dir", "features", "Where shards, manifest.json and errors.tsv go.")
flags.DEFINE_bool("demo", False, "Generate a small synthetic labelled video set with ffmpeg (into --videos, "
                  "default demo_videos/) and extract it: a first run without any dataset.")
flags.DEFINE_enum("backbone", None, list(backbones.BACKBONES),
                  f"CNN that turns each frame into a feature vector. Default: {plan.DEFAULT_BACKBONE}, with "
                  f"--demo {plan.DEMO_BACKBONE}. movinet_a0_stream: a video CNN trained on Kinetics-600 that reads "
                  "one frame at a time and carries its state from frame to frame, so its features carry motion "
                  "(172 px, 480-d; its published model, 3.3 MB, is downloaded once, or give a copy with "
                  "--weights FILE). Image CNNs, each frame alone: the EfficientNet-Lite models have ImageNet "
                  "weights that work offline (lite0: 224 px, ImageNet top-1 75.1 %; lite1: 240 px, 76.7 %; "
                  "lite2: 260 px, 77.6 %; 1280-d features).")
flags.DEFINE_string("weights", None,
                    "Default: the backbone's pretrained weights: 'kinetics600' for movinet_a0_stream (downloaded "
                    "once into ~/.cache/video_features/models/), 'imagenet' for the image CNNs (the "
                    "EfficientNet-Lite ones ship with the package and work offline, the others are downloaded by "
                    "Keras). Or a path to a weights file for the backbone (for movinet_a0_stream, a copy of its "
                    "published .tflite file), or 'none' (image CNNs: random weights, meaningless features, smoke "
                    "tests only).")
flags.DEFINE_enum("engine", _DEFAULTS.engine, list(backbones.ENGINES),
                  "What runs the CNN: 'litert' (TensorFlow Lite's CPU interpreter, fastest on CPU), "
                  "'tensorflow' (use it with a GPU), or 'auto' (tensorflow if a GPU is visible, else litert).")
flags.DEFINE_enum("precision", _DEFAULTS.precision, list(backbones.PRECISIONS),
                  "How the CNN computes. 'int8' (LiteRT on CPUs, EfficientNet-Lite backbones): quantized, features "
                  "within cosine ~0.99 of float32's; about twice float32's frames/s on CPUs with AVX-512 VNNI, "
                  "1.0-1.1x on AVX2-only ones. 'float32'. 'mixed' (TensorFlow on a GPU): float16 compute, "
                  "features within 1 % of float32's largest value. 'auto': an existing --output_dir keeps the "
                  "precision it was made with; a new one gets mixed on a GPU, and on a CPU int8 only where it "
                  f"measured faster, at least {precision_choice.MIN_SPEEDUP:g}x float32's speed, on this CPU "
                  "(timed once per CPU and backbone, then cached), else float32. The stored features are float32 "
                  "(or --dtype) whatever the precision.")
flags.DEFINE_float("fps", _DEFAULTS.fps,
                   "Frames per second sampled from each video. 5 keeps the motion of human actions while "
                   "sparing the CNN the near-duplicate frames of 25-30 fps video (6x less work). From "
                   f"{plan.FPS_RANGE[0]:g} to {plan.FPS_RANGE[1]:g}.")
flags.DEFINE_float("seconds", _DEFAULTS.seconds, f"Length of the window read from the start of each video. "
                   f"Every video is padded to seconds x fps frames. From {plan.SECONDS_RANGE[0]:g} to "
                   f"{plan.SECONDS_RANGE[1]:g}.")
flags.DEFINE_enum("dtype", _DEFAULTS.dtype, list(schema.DTYPES),
                  "How feature values are stored: float32, or float16 (half the size).")
flags.DEFINE_integer("batch_size", None, "Frames per CNN call; frames of several videos are packed "
                     "together. Default: " + ", ".join(f"{size} with {engine}" for engine, size in
                                                      backbones.DEFAULT_BATCH_SIZES.items()) + ".",
                     lower_bound=1)
flags.DEFINE_integer("decode_workers", None, "Videos decoded in parallel (one ffmpeg process each) while the CNN "
                     "runs. Default: one per CPU core this process may use.", lower_bound=1)
flags.DEFINE_float("decode_timeout", _DEFAULTS.decode_timeout, "Seconds one ffmpeg may take to decode one video "
                   "before it is stopped and the video counted as failed; such a failure (like a read error) is "
                   "retried by the next run of the same command.")
flags.DEFINE_integer("videos_per_shard", _DEFAULTS.videos_per_shard,
                     "Videos per TFRecord shard. A shard is also the unit of resumption: an interrupted run "
                     "redoes at most the shards it had not finished.")
flags.DEFINE_string("splits_dir", None, "Folder with UCF-101's classInd.txt, trainlistNN.txt and testlistNN.txt; "
                    "labels and train/test membership then follow those lists.")
flags.DEFINE_enum("split", "1", ["1", "2", "3"], "Which official split to use with --splits_dir.")
flags.DEFINE_float("test_fraction", 0.2, "Without --splits_dir: share of each class's groups held out as the "
                   "test split (UCF-style v_X_gNN_cMM clips of one group stay together; other files are "
                   "their own group). 0 writes only a train split.")
flags.DEFINE_enum("runner", "local", ["local", "ray"], "What extracts the shards: 'local' (this process, "
                  "the default) or 'ray' (a pool of workers on a Ray cluster; pip install -e '.[ray]').")
flags.DEFINE_string("ray_address", None, "With --runner ray: HOST:PORT of the cluster's head (ray start --head "
                    "prints it). Default: a local Ray instance with this machine's cores, for the run.")
flags.DEFINE_integer("ray_workers", None, "With --runner ray: number of workers (default: one per GPU with the "
                     "TensorFlow engine on GPUs, else the cluster's CPUs / --ray_cpus_per_worker).", lower_bound=1)
flags.DEFINE_integer("ray_cpus_per_worker", None, "With --runner ray: CPU cores per worker, shared by its CNN "
                     "threads and its ffmpeg decoders (default: the CPUs per GPU, or 4 on CPUs, at most a "
                     "node's).", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Delete the files of an earlier extraction in --output_dir (those its "
                  "manifest lists, and nothing else) and start over.")
console.define_progress_flags(flags)
flags.adopt_module_key_flags(console)

FLAGS = flags.FLAGS
EXIT_SOME_FAILED = 3
DEMO_VIDEOS = "demo_videos"


def _interrupt(signal_number, frame):
    raise KeyboardInterrupt


def _config():
    """The settings, checked before anything is read or written."""
    try:
        dataset.check_test_fraction(FLAGS.test_fraction)
        dataset.check_class_depth(FLAGS.class_depth)
        console.check_number("progress_seconds", FLAGS.progress_seconds, minimum=0)
        backbone = FLAGS.backbone or (plan.DEMO_BACKBONE if FLAGS.demo else plan.DEFAULT_BACKBONE)
        return plan.ExtractConfig(
            backbone=backbone, weights=FLAGS.weights, engine=FLAGS.engine, precision=FLAGS.precision,
            fps=FLAGS.fps,
            seconds=FLAGS.seconds, dtype=FLAGS.dtype, batch_size=FLAGS.batch_size,
            decode_workers=FLAGS.decode_workers, videos_per_shard=FLAGS.videos_per_shard,
            decode_timeout=FLAGS.decode_timeout)
    except ValueError as e:
        raise console.UsageError(str(e)) from None


def _runner():
    if FLAGS.runner == "local":
        return local_runner.LocalRunner(FLAGS.progress, FLAGS.progress_seconds)
    try:
        from extract import ray_runner
        import ray  # noqa: F401
    except ImportError:
        raise console.UsageError("--runner ray needs Ray: pip install -e '.[ray]'") from None
    return ray_runner.RayRunner(FLAGS.ray_address, FLAGS.ray_workers, FLAGS.ray_cpus_per_worker, FLAGS.progress,
                                FLAGS.progress_seconds)


def _describe(video_set):
    """What was found, printed before the long part starts."""
    names = video_set.class_names
    shown = ", ".join(names[:8]) + (f" ... ({len(names) - 8} more)" if len(names) > 8 else "")
    counts = ", ".join(f"{len(v)} {k}" for k, v in video_set.splits.items()) or "0"
    print(f"{len(names)} classes: {shown}")
    print(f"{counts} videos" + (f"; {video_set.unlisted} videos in no split list (ignored)"
                                if video_set.unlisted else ""))
    for notice in video_set.notices:
        print(f"WARNING: {notice}", file=sys.stderr)


def _warn_if_inside(output_dir, videos_dir):
    """An output folder inside the videos folder works (its files are not
    videos), but it is listed with the videos and travels with them."""
    if files.is_remote(output_dir):
        return
    output, videos = pathlib.Path(output_dir).resolve(), pathlib.Path(videos_dir).resolve()
    if output == videos or videos in output.parents:
        print(f"WARNING: --output_dir {output_dir} is inside --videos {videos_dir}; it works (its files are not "
              "videos), but its folder is listed as a class folder without videos and goes wherever the videos "
              "are copied: an output folder beside the videos keeps the two apart", file=sys.stderr)


def main(argv):
    if len(argv) > 1:
        raise console.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _config()
    runner = _runner()
    # "kill PID" stops like Ctrl-C: finished shards are kept, and the message says how to resume.
    signal.signal(signal.SIGTERM, _interrupt)
    console.log_plainly()
    videos_dir = FLAGS.videos
    try:
        files.check_folder_path(FLAGS.output_dir, "--output_dir")
    except ValueError as e:
        raise console.UsageError(str(e)) from None
    if FLAGS.demo:
        from extract import demo

        videos_dir = pathlib.Path(videos_dir or DEMO_VIDEOS)
        if not any(videos_dir.glob("*/*")):
            print(f"writing demo videos to {videos_dir}/ ...")
            demo.make_demo_videos(videos_dir)
    elif videos_dir is None:
        raise console.UsageError("--videos is required (or --demo)")

    if FLAGS.splits_dir:
        split_source = {"splits_dir": os.path.abspath(FLAGS.splits_dir), "split": int(FLAGS.split)}
    else:
        split_source = {"test_fraction": FLAGS.test_fraction}
    try:
        video_set = dataset.load_videos(videos_dir, FLAGS.splits_dir, int(FLAGS.split), FLAGS.test_fraction,
                                        FLAGS.class_depth if FLAGS["class_depth"].present else None)
        _describe(video_set)
        _warn_if_inside(FLAGS.output_dir, videos_dir)
        summary = extraction.run(video_set, FLAGS.output_dir, config, runner, split_source=split_source,
                                 overwrite=FLAGS.overwrite)
    except (ValueError, plan.ExtractionRefused, extraction.OutputUnwritable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
        return 130
    summary.wall_seconds = console.seconds_since_start()  # the whole command, start-up included
    print(summary)
    return EXIT_SOME_FAILED if summary.failed else 0


def run():
    console.run_command(main, "python -m extract")


if __name__ == "__main__":
    run()
