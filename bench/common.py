"""Shared pieces of the benchmarks: test clips, timing, tables, JSON results."""

import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SHARED_VIDEOS = pathlib.Path(os.environ.get("SHARED_VIDEOS", REPO.parent / "shared" / "videos"))
# The image CNN these benchmarks measured the extractor's machinery with
# (its weights come with the install); the default backbone is MoViNet now.
LITE0 = "efficientnet_lite0"
# Where this machine keeps the published models it cannot download.
SHARED_MODELS = pathlib.Path(os.environ.get("SHARED_MODELS", REPO.parent / "shared" / "models"))


def local_weights(backbone):
    """``--weights`` for ``backbone`` here: MoViNet's published model from
    ``SHARED_MODELS`` where it is kept, else None (the backbone's default:
    Lite's come with the install, MoViNet's from the cache or a download)."""
    from extract import movinet

    path = SHARED_MODELS / movinet.PUBLISHED_MODEL.file_name
    return str(path) if backbone == movinet.NAME and path.is_file() else None


def add_cache_argument(parser):
    """``--cache``: where the synthetic clips are made once and kept, shared by the benchmarks."""
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bench_clips"),
                        help="where the synthetic clips are made once and kept")


def make_clips(folder, count, seconds=10.0, size=(320, 240), rate=25):
    """UCF-101-like clips: ``count`` videos of ``seconds`` at 320x240, 25 fps,
    MPEG-4 Part 2 in AVI, two classes (made once, then reused)."""
    from extract.video import ffmpeg_binary

    folder = pathlib.Path(folder)
    paths = []
    for i in range(count):
        source = ("testsrc2", "smptehdbars")[i % 2]
        path = folder / source / f"v_{source}_g{i // 4:02d}_c{i % 4:02d}.avi"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            f"{source}=s={size[0]}x{size[1]}:r={rate}:d={seconds}", "-vf", "noise=alls=8:allf=t",
                            "-c:v", "mpeg4", "-q:v", "5", str(path)], check=True)
        paths.append(path)
    return paths


class Timer:
    """Wall and CPU time (this process and finished children) of a block."""

    def __enter__(self):
        self._wall = time.perf_counter()
        self._cpu = _cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = _cpu_seconds() - self._cpu


def rotated_rounds(ways, rounds, workdir):
    """Runs every way once per round, in an order rotated each round (so that
    no way always meets the same moment of a noisy machine), each in the
    round's own folder.

    Args:
      ways: name -> ``run(round_dir)``.
      rounds: how many rounds.
      workdir: a ``pathlib.Path`` for the rounds' folders.

    Returns:
      One dict per round: name -> its ``Timer`` (``wall`` and ``cpu`` seconds).
    """
    names = list(ways)
    results = []
    for round_index in range(rounds):
        round_dir = workdir / f"round{round_index}"
        round_dir.mkdir(exist_ok=True)
        timers = {}
        for name in names[round_index % len(names):] + names[:round_index % len(names)]:
            with Timer() as timers[name]:
                ways[name](round_dir)
        results.append(timers)
    return results


def _cpu_seconds():
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


# The instruction sets that decide the CNN's speed (int8 against float32 above all).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu():
    """The CPU's model name and which of ``CPU_FLAGS`` it has (Linux's /proc/cpuinfo)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "flags": []}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", platform.machine()), "flags": [f for f in CPU_FLAGS if f in flags]}


def machine():
    return {"cpus": os.cpu_count(), "cpu": cpu(), "platform": platform.platform(),
            "python": platform.python_version()}


def print_table(title, header, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def save(name, result):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    module = sys.modules["__main__"].__spec__.name
    command = " ".join(["python -m", module, *sys.argv[1:]])
    path.write_text(json.dumps({"machine": machine(), "command": command, **result}, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
