"""Storage: float32 against float16 records.

    python -m bench.storage               # about 4 minutes on 2 CPU cores

The demo's synthetic videos (classes told apart only by temporal order, so
accuracy is measurable) are extracted once with the default backbone; the
same features are written as float32 and as float16 records. For each:
bytes per video, read throughput of the training reader (as it reads
during training: shuffled, repeated, batches of 32), and held-out
top-1 of the same GRU training run (same seed, same steps).
"""

import argparse
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import LITE0, add_cache_argument, print_table, save  # noqa: E402
from bench.training_input import reader_rate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    add_cache_argument(parser)
    args = parser.parse_args()

    from extract import dataset, demo, local_runner, plan
    from rnn import training
    from extract.backbones import Backbone
    from records.manifest import read_manifest

    videos = pathlib.Path(args.cache) / "demo"
    if not any(videos.glob("*/*")):
        demo.make_demo_videos(videos)
    video_set = dataset.load_videos(videos)
    backbone = Backbone(LITE0)
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as workdir:
        for dtype in ("float32", "float16"):
            folder = pathlib.Path(workdir) / dtype
            local_runner.extract(video_set, folder, plan.ExtractConfig(backbone=LITE0, dtype=dtype),
                                 show_progress=False,
                             backbone=backbone)
            manifest = read_manifest(folder)
            count = sum(split["videos"] for split in manifest["splits"].values())
            size = sum(path.stat().st_size for path in folder.glob("*.tfrecord"))
            metrics = training.train(training.TrainConfig(
                train_pattern=str(folder / "train-*.tfrecord"), eval_pattern=str(folder / "test-*.tfrecord"),
                logdir=str(pathlib.Path(workdir) / "runs"), run_name=dtype, steps=args.steps))
            results[dtype] = {"bytes_per_video": size / count, "read_examples_per_second":
                              reader_rate(str(folder / "train-*.tfrecord"), manifest, 32, batches=100),
                              "top1": metrics["exported"]["test"]["top1"], "videos": count}
            r = results[dtype]
            rows.append([dtype, f"{r['bytes_per_video'] / 1024:.0f}", f"{r['read_examples_per_second']:.0f}",
                         f"{r['top1']:.3f}"])
    print_table(f"{results['float32']['videos']} demo videos, 50 x 1280 features each; GRU, {args.steps} steps",
                ["dtype", "KiB per video", "reader examples/s", "held-out top-1"], rows)
    results["float16 / float32 bytes"] = results["float16"]["bytes_per_video"] / results["float32"]["bytes_per_video"]
    results["float16 / float32 read rate"] = (results["float16"]["read_examples_per_second"]
                                             / results["float32"]["read_examples_per_second"])
    save("storage", results)


if __name__ == "__main__":
    main()
