"""Extraction scaling and memory.

    python -m bench.scaling               # about 8 minutes on 2 CPU cores (clips made once)

1. ``python -m extract`` on 10, 50 and 200 UCF-101-like 10-s clips: wall time
   and the process's peak resident memory. Time should grow linearly (a
   fixed start-up, then a constant cost per video) and peak memory should stay
   flat: features go to disk as each video finishes, nothing accumulates.
2. Frames/s of the extractor versus ``--fps`` (1, 5, 25) and versus
   ``--batch_size`` (1, 4, 32), on the same 10 clips, measured in one
   process with one backbone.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import LITE0, REPO, add_cache_argument, make_clips, print_table, save  # noqa: E402


def run_cli(videos, output):
    """Runs ``python -m extract``; returns (wall seconds, peak RSS in MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "extract", "--videos", str(videos), "--output_dir",
                                str(output), "--test_fraction", "0", "--progress=false"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"python -m extract failed on {videos}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def linear_fit(xs, ys):
    """Slope, intercept and R^2 of a least-squares line."""
    import numpy as np

    slope, intercept = np.polyfit(xs, ys, 1)
    predicted = slope * np.asarray(xs) + intercept
    residual = ((np.asarray(ys) - predicted) ** 2).sum()
    total = ((np.asarray(ys) - np.mean(ys)) ** 2).sum()
    return float(slope), float(intercept), float(1 - residual / total)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="10,50,200", help="numbers of videos")
    add_cache_argument(parser)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]

    clips = make_clips(pathlib.Path(args.cache) / "scaling", max(counts))
    scaling = []
    with tempfile.TemporaryDirectory() as workdir:
        for count in counts:
            subset = pathlib.Path(workdir) / f"videos_{count}"
            for clip in clips[:count]:
                link = subset / clip.parent.name / clip.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(clip)
            seconds, peak_mib = run_cli(subset, pathlib.Path(workdir) / f"out_{count}")
            scaling.append({"videos": count, "seconds": seconds, "peak_rss_mib": peak_mib})
    slope, intercept, r2 = linear_fit([s["videos"] for s in scaling], [s["seconds"] for s in scaling])
    print_table(f"python -m extract on N clips: time = {intercept:.1f} s + {slope:.2f} s/video (R^2 {r2:.4f})",
                ["videos", "seconds", "s/video after start-up", "peak RSS MiB"],
                [[s["videos"], f"{s['seconds']:.1f}", f"{(s['seconds'] - intercept) / s['videos']:.3f}",
                  f"{s['peak_rss_mib']:.0f}"] for s in scaling])

    from extract import dataset, local_runner, plan
    from extract.backbones import Backbone

    backbone = Backbone(LITE0)
    video_set = dataset.load_videos(pathlib.Path(args.cache) / "scaling", test_fraction=0)
    video_set.splits["train"] = sorted(video_set.splits["train"], key=lambda v: v.video_id)[:10]
    variants = [("fps", value, plan.ExtractConfig(backbone=LITE0, fps=value)) for value in (1, 5, 25)]
    variants += [("batch_size", value, plan.ExtractConfig(backbone=LITE0, batch_size=value)) for value in (1, 4, 32)]
    rates = []
    backbone(__import__("numpy").zeros((1, 224, 224, 3), "uint8"))
    for setting, value, config in variants:
        with tempfile.TemporaryDirectory() as workdir:
            summary = local_runner.extract(video_set, workdir, config, show_progress=False, backbone=backbone)
        rates.append({"setting": setting, "value": value, "frames": summary.frames_extracted,
                      "frames_per_second": summary.frames_extracted / summary.wall_seconds})
    print_table(f"extractor on {len(video_set.splits['train'])} clips (one process, backbone loaded once)",
                ["setting", "value", "frames", "frames/s"],
                [[r["setting"], r["value"], r["frames"], f"{r['frames_per_second']:.1f}"] for r in rates])
    save("scaling", {"scaling": scaling, "time_fit": {"seconds_per_video": slope, "startup_seconds": intercept,
                                                      "r2": r2}, "variants": rates})


if __name__ == "__main__":
    main()
