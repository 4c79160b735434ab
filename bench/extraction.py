"""Extraction efficiency: the product against its ceiling and two baselines.

    python -m bench.extraction            # about 3 minutes on 2 CPU cores

On the same videos, with the default backbone (EfficientNet-Lite0, ImageNet)
and batch size, measured side by side in one run:

  ceiling    the backbone alone on frames already decoded in memory
  decode     ffmpeg decode + resize + crop into numpy, one video after another
  product    the extractor (decode pool, cross-video batches, shard writing)
  naive      per video in turn: decode, then the CNN on its frames, then write
  tutorial   the same, with one CNN call per frame

and reports product / ceiling and product / each baseline. Two video sets:
UCF-101-like synthetic clips (10 s, 320x240, 25 fps, MPEG-4 in AVI) and the
real clips of ../shared/videos (when present).
"""

import argparse
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import SHARED_VIDEOS, Timer, make_clips, print_table, save  # noqa: E402


def measure(video_set, backbone, config, workdir):
    """Frames/s of each way of extracting ``video_set``; returns a dict."""
    import tensorflow as tf

    from extract import pipeline
    from extract.video import decode_frames
    from records import schema

    videos = [v for split in video_set.splits.values() for v in split]
    size = backbone.image_size

    def decode(video):
        return decode_frames(video.path, config.fps, config.seconds, size).frames

    # Warm up: trace the CNN for both batch shapes, touch the files.
    backbone(decode(videos[0])[:1])
    backbone(decode(videos[0])[: config.batch_size])

    with Timer() as decode_time:
        decoded = [decode(video) for video in videos]
    frames = sum(len(f) for f in decoded)

    with Timer() as ceiling_time:
        everything = __import__("numpy").concatenate(decoded)
        for start in range(0, len(everything), config.batch_size):
            backbone(everything[start:start + config.batch_size])
    del everything, decoded

    with Timer() as product_time:
        pipeline.extract(video_set, workdir / "product", config, show_progress=False, backbone=backbone)

    def sequential(path, per_frame):
        with tf.io.TFRecordWriter(str(path)) as writer:
            for video in videos:
                video_frames = decode(video)
                if per_frame:
                    features = __import__("numpy").concatenate([backbone(f[None]) for f in video_frames])
                else:
                    features = backbone(video_frames)
                writer.write(schema.encode_video(video.video_id, video.label, video.label_name, features,
                                                 config.max_frames, config.fps, config.dtype))

    with Timer() as naive_time:
        sequential(workdir / "naive.tfrecord", per_frame=False)
    with Timer() as tutorial_time:
        sequential(workdir / "tutorial.tfrecord", per_frame=True)

    rate = {name: frames / timer.wall for name, timer in (
        ("ceiling", ceiling_time), ("decode", decode_time), ("product", product_time), ("naive", naive_time),
        ("tutorial", tutorial_time))}
    return {
        "videos": len(videos),
        "frames": frames,
        "frames_per_second": rate,
        "decode_cpu_seconds_per_video": decode_time.cpu / len(videos),
        "ratios": {
            "product / ceiling": rate["product"] / rate["ceiling"],
            "product / naive": rate["product"] / rate["naive"],
            "product / tutorial": rate["product"] / rate["tutorial"],
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16, help="synthetic 10-s clips")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bench_clips"),
                        help="where the synthetic clips are made once and kept")
    args = parser.parse_args()

    from extract import dataset, pipeline
    from extract.backbones import Backbone

    config = pipeline.ExtractConfig()
    backbone = Backbone(config.backbone, config.weights)
    clips_dir = pathlib.Path(args.cache) / f"clips_{args.clips}"
    make_clips(clips_dir, args.clips)
    sets = {"synthetic 10 s 320x240": clips_dir}
    if SHARED_VIDEOS.is_dir():
        sets["../shared/videos"] = SHARED_VIDEOS
    results = {}
    for name, folder in sets.items():
        with tempfile.TemporaryDirectory() as workdir:
            video_set = dataset.load_videos(folder, test_fraction=0)
            results[name] = measure(video_set, backbone, config, pathlib.Path(workdir))
        r = results[name]
        print_table(f"{name}: {r['videos']} videos, {r['frames']} frames; decode "
                    f"{r['decode_cpu_seconds_per_video']:.2f} CPU-s per video",
                    ["way", "frames/s", "product / way"],
                    [[way, f"{fps:.1f}", f"{r['frames_per_second']['product'] / fps:.2f}"]
                     for way, fps in r["frames_per_second"].items()])
    save("extraction", {"backbone": config.backbone, "batch_size": config.batch_size, "fps": config.fps,
                        "decode_workers": config.decode_workers, "sets": results})


if __name__ == "__main__":
    main()
