"""The Ray runner against the local runner on one machine.

    python -m bench.distributed           # about 8 minutes on 2 CPU cores

On the same UCF-101-like clips (10 s, 320x240, 25 fps), as users run them
(``python -m extract`` in a subprocess, a fresh output folder each time),
measured side by side in rotated rounds:

  local              --runner local (the default)
  ray, 1 worker      --runner ray: a local Ray instance, one worker with both cores
  ray, 2 workers     --runner ray: two workers of one core each

For each: extraction frames/s (decoding + CNN, from the run's summary), wall
time including start-up, and peak memory (RSS summed over the process tree:
driver, Ray's services and workers, ffmpeg). Then the engine's fixed costs:
start-up (wall time minus extraction time, beyond the local runner's) and
the cost per shard (two workers on 1-video shards against 12-video shards).
On one machine Ray has no cores to add; its costs buy scale-out, and the
summary says from what dataset size they pay off on N machines.
"""

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench.common import REPO, add_cache_argument, make_clips, print_table, save

WAYS = {
    "local": ["--runner", "local"],
    "ray, 1 worker": ["--runner", "ray", "--ray_workers", "1", "--ray_cpus_per_worker", "2"],
    "ray, 2 workers": ["--runner", "ray", "--ray_workers", "2", "--ray_cpus_per_worker", "1"],
}


def _tree_rss_bytes(root):
    """RSS of ``root`` and all its descendants (from /proc)."""
    children, rss = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(name))
            rss[int(name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_extract(clips, output, extra, videos_per_shard):
    """Runs the extractor; returns frames/s, extraction and wall seconds, peak RSS."""
    command = [sys.executable, "-m", "extract", "--videos", str(clips), "--output_dir", str(output),
               "--test_fraction", "0", "--videos_per_shard", str(videos_per_shard), "--progress=false", *extra]
    peak = 0
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sample():
        nonlocal peak
        while process.poll() is None:
            peak = max(peak, _tree_rss_bytes(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr}")
    speed = re.search(r"speed: ([\d.]+) frames/s decoding \+ CNN \(([\d.]+) s\)", stdout)
    return {"frames_per_second": float(speed.group(1)), "extract_seconds": float(speed.group(2)),
            "wall_seconds": wall, "peak_rss_mib": peak / 2 ** 20}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="synthetic 10-s clips")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions in rotated order; medians are reported")
    add_cache_argument(parser)
    args = parser.parse_args()

    clips = pathlib.Path(args.cache) / f"clips_{args.clips}"
    make_clips(clips, args.clips)
    per_way = {way: [] for way in WAYS}
    # Both shard sizes give each of the 2 workers the same number of videos
    # (24 one-video shards, or 2 twelve-video shards), so only the number of
    # shards differs.
    large = args.clips // 2
    per_shard = {"1 video per shard": [], f"{large} videos per shard": []}
    names = list(WAYS)
    with tempfile.TemporaryDirectory() as workdir:
        # One warm-up run converts the CNN into the shared cache, as a first run would.
        run_extract(clips, pathlib.Path(workdir) / "warm-up", WAYS["local"], 8)
        for round_number in range(args.rounds):
            order = names[round_number % len(names):] + names[:round_number % len(names)]
            for way in order:
                output = pathlib.Path(workdir) / f"{round_number}-{names.index(way)}"
                per_way[way].append(run_extract(clips, output, WAYS[way], 8))
                print(f"round {round_number + 1}, {way}: {per_way[way][-1]}", flush=True)
            for label, size in (("1 video per shard", 1), (f"{large} videos per shard", large)):
                output = pathlib.Path(workdir) / f"{round_number}-shards-{size}"
                per_shard[label].append(run_extract(clips, output, WAYS["ray, 2 workers"], size))

    def median(runs, key):
        return statistics.median(run[key] for run in runs)

    frames = args.clips * 50
    results = {"clips": args.clips, "frames": frames, "rounds": args.rounds, "ways": {}}
    rows = []
    local_overhead = median(per_way["local"], "wall_seconds") - median(per_way["local"], "extract_seconds")
    for way, runs in per_way.items():
        summary = {key: median(runs, key) for key in runs[0]}
        summary["start_up_seconds"] = summary["wall_seconds"] - summary["extract_seconds"]
        summary["ratio_to_local"] = statistics.median(
            run["frames_per_second"] / local["frames_per_second"] for run, local in zip(runs, per_way["local"]))
        results["ways"][way] = summary
        rows.append([way, f"{summary['frames_per_second']:.1f}", f"{summary['ratio_to_local']:.2f}",
                     f"{summary['wall_seconds']:.1f}", f"{summary['start_up_seconds']:.1f}",
                     f"{summary['peak_rss_mib']:.0f}"])
    print_table(f"{args.clips} clips of 10 s ({frames} frames), medians of {args.rounds} rotated rounds",
                ["way", "frames/s", "/ local (median of rounds)", "wall s", "start-up s", "peak RSS MiB"], rows)

    shards_small, shards_large = args.clips, 2
    time_small = median(per_shard["1 video per shard"], "extract_seconds")
    time_large = median(per_shard[f"{large} videos per shard"], "extract_seconds")
    # Each worker did shards / 2 shards: the extra time per extra shard of a worker.
    results["per_shard_seconds"] = (time_small - time_large) / ((shards_small - shards_large) / 2)
    results["ray_start_up_beyond_local_seconds"] = (results["ways"]["ray, 2 workers"]["start_up_seconds"]
                                                    - local_overhead)
    results["shard_runs"] = {label: {key: median(runs, key) for key in runs[0]} for label, runs in per_shard.items()}
    print(f"\nRay's fixed costs: start-up {results['ray_start_up_beyond_local_seconds']:.1f} s beyond the local "
          f"runner's {local_overhead:.1f} s; {results['per_shard_seconds']:.2f} s of a worker's time per shard "
          f"({shards_small} one-video shards took {time_small:.1f} s, {shards_large} shards of {large} videos "
          f"{time_large:.1f} s, on 2 workers)")
    save("distributed", results)


if __name__ == "__main__":
    main()
