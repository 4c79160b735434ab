"""Where ffmpeg's time goes, and what each way of saving some costs the features.

    python -m bench.decoding              # about 5 minutes on 2 CPU cores

For every clip (the synthetic 10-s clips, and ../shared/videos when present)
each variant of the product's ffmpeg command runs once per round, in a
rotated order, and its CPU time (user + system, from the kernel's record of
the finished child) is summed per variant. Reported: CPU per kept frame,
the ratio to today's command, and for variants that output frames, how far
their frames and their EfficientNet-Lite0 (float32) features are from
today's (mean absolute pixel difference; per-frame cosine of the features,
median and 5th percentile).

Variants:
  today                    the product's command (one decoder thread, one filter thread)
  default filter threads   the same with ffmpeg's one filter thread per core
  area scaler              swscale's ``area`` instead of ``bilinear``
  YUV scale, RGB after     scale in YUV, then the unscaled YUV-to-RGB fast path
  no deblocking            ``-skip_loop_filter all`` (H.264 and HEVC only)
  decode + fps only        the floor without changing decoding: no scaling, no RGB, no pipe
  start-up                 a process that decodes one frame and stops
"""

import argparse
import os
import pathlib
import resource
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import SHARED_VIDEOS, add_cache_argument, make_clips, print_table, save  # noqa: E402

SIZE, FPS, SECONDS = 224, 5.0, 10.0


def variants(path):
    """Variant name -> ffmpeg command for one clip."""
    from extract.video import ffmpeg_command, max_frames_for

    frames = max_frames_for(FPS, SECONDS)
    today = ffmpeg_command(path, FPS, SECONDS, SIZE, frames)
    graph = today[today.index("-filter_complex") + 1]

    def with_graph(new_graph, *before_input):
        command = list(today)
        command[command.index("-filter_complex") + 1] = new_graph
        position = command.index("-t")
        return command[:position] + list(before_input) + command[position:]

    null_output = ["-f", "null", "-"]
    head = today[:today.index("-filter_complex")]
    return {
        "today": today,
        "default filter threads": ffmpeg_command(path, FPS, SECONDS, SIZE, frames, filter_threads=None),
        "area scaler": with_graph(graph.replace("flags=bilinear", "flags=area")),
        "YUV scale, RGB after": with_graph(graph.replace("[s1];[s1]crop", ",format=yuv420p,format=rgb24[s1];[s1]crop")),
        "no deblocking": with_graph(graph, "-skip_loop_filter", "all"),
        "decode + fps only": head + ["-filter_complex", "[0:v]fps=fps=5[s0]", "-map", "[s0]", "-frames:v",
                                     str(frames), *null_output],
        "start-up": head + ["-map", "0:v", "-frames:v", "1", *null_output],
    }


def _cpu_of(command):
    """(CPU seconds, stdout bytes) of one finished ffmpeg."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, capture_output=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, output


def measure(paths, rounds, backbone):
    import numpy as np

    names = list(variants(paths[0]))
    cpu = {name: 0.0 for name in names}
    frames = {}
    for round_index in range(rounds):
        for clip_index, path in enumerate(paths):
            commands = variants(path)
            shift = (round_index + clip_index) % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, output = _cpu_of(commands[name])
                cpu[name] += seconds
                if round_index == 0 and output:
                    frames.setdefault(name, []).append(np.frombuffer(output, np.uint8).reshape(-1, SIZE, SIZE, 3))
    kept = sum(len(f) for f in frames["today"])
    rows = {}
    reference = [backbone(f) for f in frames["today"]]
    for name in names:
        row = {"cpu_ms_per_kept_frame": 1000 * cpu[name] / rounds / kept, "ratio": cpu[name] / cpu["today"]}
        if name in frames and name != "today":
            pixels = np.concatenate(frames[name]).astype(np.int16) - np.concatenate(frames["today"]).astype(np.int16)
            features = np.concatenate([backbone(f) for f in frames[name]])
            today = np.concatenate(reference)
            cosine = (features * today).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(today, axis=1)
            row.update({"mean_pixel_difference": float(np.abs(pixels).mean()),
                        "feature_cosine_median": float(np.median(cosine)),
                        "feature_cosine_p5": float(np.percentile(cosine, 5))})
        rows[name] = row
    return {"clips": len(paths), "kept_frames": kept, "rounds": rounds, "variants": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8, help="synthetic 10-s clips")
    parser.add_argument("--rounds", type=int, default=3)
    add_cache_argument(parser)
    args = parser.parse_args()

    from extract import dataset
    from extract.backbones import Backbone

    backbone = Backbone("efficientnet_lite0", precision="float32")
    sets = {"synthetic 10 s 320x240": make_clips(pathlib.Path(args.cache) / f"clips_{args.clips}", args.clips)}
    if SHARED_VIDEOS.is_dir():
        videos = dataset.load_videos(SHARED_VIDEOS, test_fraction=0, class_depth=2)
        sets["../shared/videos"] = sorted(v.path for split in videos.splits.values() for v in split)
    results = {}
    for name, paths in sets.items():
        results[name] = r = measure([str(p) for p in paths], args.rounds, backbone)
        print_table(f"{name}: {r['clips']} clips, {r['kept_frames']} kept frames, {r['rounds']} rounds",
                    ["variant", "CPU ms per kept frame", "/ today", "mean |pixel diff|", "feature cosine median",
                     "5th pct"],
                    [[variant, f"{v['cpu_ms_per_kept_frame']:.2f}", f"{v['ratio']:.2f}",
                      f"{v['mean_pixel_difference']:.2f}" if "mean_pixel_difference" in v else "",
                      f"{v['feature_cosine_median']:.4f}" if "feature_cosine_median" in v else "",
                      f"{v['feature_cosine_p5']:.4f}" if "feature_cosine_p5" in v else ""]
                     for variant, v in r["variants"].items()])
    save("decoding", {"size": SIZE, "fps": FPS, "seconds": SECONDS, "sets": results})


if __name__ == "__main__":
    main()
