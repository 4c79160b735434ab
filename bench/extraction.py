"""Extraction efficiency: the product against its ceiling and two baselines.

    python -m bench.extraction            # about 6 minutes on 2 CPU cores

On the same videos, with the default backbone (EfficientNet-Lite0, ImageNet),
engine and batch size, measured side by side in one run:

  ceiling    the backbone alone on frames already decoded in memory
  ceiling (tensorflow engine)
             the same with TensorFlow running the CNN instead of LiteRT (at
             TensorFlow's own default batch size)
  decode     ffmpeg decode + resize + crop into numpy, one video after another
  product    the extractor (decode pool, cross-video batches, shard writing)
  naive      per video in turn: decode, then the CNN on its frames (in
             batches of the same size as the product's), then write
  tutorial   the same, with one CNN call per frame

and reports product / ceiling and product / each baseline, as medians over
rounds in which the ways run in rotated order, and the CPU cores each way
keeps busy (CPU seconds of the process and its ffmpeg children / wall
seconds). On a CPU-only machine decoding and the CNN share the cores, so
the ceiling cannot be reached; the bench also reports the best any schedule
could do, ``bound = cores / (CNN CPU-s per frame + decode CPU-s per
frame)``, and product / bound. Two video sets:
UCF-101-like synthetic clips (10 s, 320x240, 25 fps, MPEG-4 in AVI) and the
real clips of ../shared/videos (when present).
"""

import argparse
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import (LITE0, SHARED_VIDEOS, add_cache_argument, make_clips, print_table,  # noqa: E402
                          rotated_rounds, save)


def measure(video_set, backbone, tensorflow_backbone, config, workdir, rounds):
    """Frames/s of each way of extracting ``video_set``; returns a dict.

    The ways run ``rounds`` times, in a rotated order each round; ratios are
    computed within a round (the ways met the same machine load) and the
    median over rounds is reported.
    """
    import numpy as np
    import tensorflow as tf

    from extract import local_runner
    from extract.backbones import usable_cores
    from extract.video import decode_frames
    from records import schema

    videos = [v for split in video_set.splits.values() for v in split]
    batch_size = config.batch_size_for(backbone)
    size = backbone.image_size

    def decode(video):
        return decode_frames(video.path, config.fps, config.seconds, size).frames

    decoded = [decode(video) for video in videos]
    frames = sum(len(f) for f in decoded)
    everything = np.concatenate(decoded)
    del decoded

    def in_batches(model, frames, batch_size):
        return np.concatenate([model(frames[start:start + batch_size])
                               for start in range(0, len(frames), batch_size)])

    def backbone_alone(model):
        def run(round_dir):
            in_batches(model, everything, config.batch_size_for(model))

        run(None)  # warm up: first-call allocations are not part of the rate
        return run

    def decode_alone(round_dir):
        for video in videos:
            decode(video)

    def product(round_dir):
        local_runner.extract(video_set, round_dir / "product", config, show_progress=False, backbone=backbone)

    def sequential(path, per_frame):
        with tf.io.TFRecordWriter(str(path)) as writer:
            for video in videos:
                video_frames = decode(video)
                features = in_batches(backbone, video_frames, 1 if per_frame else batch_size)
                writer.write(schema.encode_video(video.video_id, video.label, video.label_name, features,
                                                 config.max_frames, config.fps, config.dtype))

    ways = {
        "ceiling": backbone_alone(backbone),
        "ceiling (tensorflow engine)": backbone_alone(tensorflow_backbone),
        "decode": decode_alone,
        "product": product,
        "naive": lambda round_dir: sequential(round_dir / "naive.tfrecord", per_frame=False),
        "tutorial": lambda round_dir: sequential(round_dir / "tutorial.tfrecord", per_frame=True),
    }
    names = list(ways)
    timed = rotated_rounds(ways, rounds, workdir)
    per_round = [{name: frames / timers[name].wall for name in names} for timers in timed]
    cores = {name: [timers[name].cpu / timers[name].wall for timers in timed] for name in names}
    decode_cpu = [timers["decode"].cpu / len(videos) for timers in timed]

    def median(values):
        return float(np.median(values))

    cores_available = usable_cores()
    bounds = [cores_available / (cores["ceiling"][i] / r["ceiling"] + decode_cpu[i] * len(videos) / frames)
              for i, r in enumerate(per_round)]
    return {
        "videos": len(videos),
        "frames": frames,
        "rounds": per_round,
        "frames_per_second": {name: median([r[name] for r in per_round]) for name in names},
        "cores_busy": {name: median(values) for name, values in cores.items()},
        "decode_cpu_seconds_per_video": median(decode_cpu),
        "ratios": {f"product / {name}": median([r["product"] / r[name] for r in per_round])
                   for name in names if name != "product"},
        "cores": cores_available,
        "bound_frames_per_second": median(bounds),
        "product / bound": median([r["product"] / bound for r, bound in zip(per_round, bounds)]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8, help="synthetic 10-s clips")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions; medians are reported")
    add_cache_argument(parser)
    args = parser.parse_args()

    from extract import dataset, plan
    from extract.backbones import Backbone

    config = plan.ExtractConfig(backbone=LITE0)
    backbone = Backbone(config.backbone, config.weights, config.engine)
    tensorflow_backbone = Backbone(config.backbone, config.weights, "tensorflow")
    clips_dir = pathlib.Path(args.cache) / f"clips_{args.clips}"
    make_clips(clips_dir, args.clips)
    sets = {"synthetic 10 s 320x240": clips_dir}
    if SHARED_VIDEOS.is_dir():
        sets["../shared/videos"] = SHARED_VIDEOS
    results = {}
    for name, folder in sets.items():
        with tempfile.TemporaryDirectory() as workdir:
            video_set = dataset.load_videos(folder, test_fraction=0)
            results[name] = measure(video_set, backbone, tensorflow_backbone, config, pathlib.Path(workdir),
                                    args.rounds)
        r = results[name]
        print_table(f"{name}: {r['videos']} videos, {r['frames']} frames; decode "
                    f"{r['decode_cpu_seconds_per_video']:.3f} CPU-s per video; {r['cores']}-core bound "
                    f"{r['bound_frames_per_second']:.1f} frames/s, product / bound {r['product / bound']:.2f}",
                    ["way", "frames/s (median)", "cores busy", "product / way (median of rounds)"],
                    [[way, f"{fps:.1f}", f"{r['cores_busy'][way]:.2f}",
                      f"{r['ratios'].get(f'product / {way}', float('nan')):.2f}"]
                     for way, fps in r["frames_per_second"].items()])
    save("extraction", {"backbone": config.backbone, "engine": backbone.engine,
                        "batch_size": config.batch_size_for(backbone), "fps": config.fps,
                        "decode_workers": config.decoders(), "sets": results})


if __name__ == "__main__":
    main()
