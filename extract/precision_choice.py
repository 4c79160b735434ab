"""What ``--precision auto`` picks on a CPU: int8 only where it pays here.

int8 trades a little fidelity (features within cosine ~0.99 of float32's;
0.3-1.1 points of top-1 on real clips: BENCHMARKS.md section 8) for speed,
and the speed depends on the CPU: EfficientNet-Lite0 int8 ran 1.5-1.9x
float32 on an AMD EPYC with AVX-512 VNNI, 1.0-1.1x on one with AVX2 only.
So the first time a backbone is used on a machine, both LiteRT models are
timed side by side (alternated batches, the order swapped every round, the
median ratio taken), and int8 is chosen only if it is faster by enough to
pay for that: at least ``MIN_SPEEDUP`` times float32's speed. The verdict
is cached, keyed by what decides it: the CPU model and its instruction-set
flags, the LiteRT version, the backbone, its weights, the threads and how
it was timed.
"""

import dataclasses
import hashlib
import json
import logging
import statistics
import time

import numpy as np

from common import cache
from records import files

# int8 cost 0.3-1.1 points of top-1 on JHMDB (grouped 5-fold CV, three
# comparisons, BENCHMARKS.md section 8): worth it at VNNI's 1.5-2x, not at
# AVX2's few percent; 1.2x also stays clear of the timing's own spread.
MIN_SPEEDUP = 1.2
# The instruction sets that decide int8 speed (Linux /proc/cpuinfo names).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
ROUNDS = 24  # ~5 s for Lite0 on 2 AVX2 cores
BATCH = 4  # the LiteRT engine's batch (backbones.DEFAULT_BATCH_SIZES)

log = logging.getLogger(__name__)


def cpu_description():
    """``{"model": "AMD EPYC", "flags": [...CPU_FLAGS it has]}`` of this machine."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux
        import platform

        model = platform.processor() or platform.machine()
    return {"model": model, "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def describe_cpu(cpu):
    """``AMD EPYC (avx2 fma avx512f avx512_vnni)``, or ``... (avx2 fma; no AVX-512)``."""
    flags = " ".join(cpu["flags"]) or "no AVX2"
    missing = "" if "avx512f" in cpu["flags"] else "; no AVX-512"
    return f"{cpu['model'] or 'unknown CPU'} ({flags}{missing})"


@dataclasses.dataclass(frozen=True)
class Verdict:
    precision: str  # "int8" or "float32"
    int8_speedup: float  # float32's time per frame / int8's
    cpu: dict

    def __str__(self):
        where = f"on this CPU, {describe_cpu(self.cpu)}"
        if self.precision == "int8":
            return f"int8: {self.int8_speedup:.2f}x float32 {where}"
        return (f"float32: int8 is not faster {where} ({self.int8_speedup:.2f}x float32, below the "
                f"{MIN_SPEEDUP:g}x that would pay for its lower fidelity)")


def verdict_path(backbone, weights, threads, cpu=None):
    """Where the verdict for these settings on this machine is cached."""
    from extract import backbones
    from records import manifest

    key = {"backbone": backbone, **backbones.describe_weights(weights), "threads": threads,
           "cpu": cpu or cpu_description(), "litert": manifest.installed_versions(("ai-edge-litert",)),
           "timing": {"rounds": ROUNDS, "batch": BATCH}}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache.cache_dir() / "precision" / f"{backbone}-{name}.json"


def int8_verdict(backbone, weights, threads):
    """The precision ``auto`` takes for ``backbone`` on this CPU, measured
    once and cached.

    Args:
      backbone, weights: as ``extract.backbones.Backbone``.
      threads: the LiteRT threads the extraction will use.

    Returns:
      A ``Verdict``.
    """
    cpu = cpu_description()
    path = verdict_path(backbone, weights, threads, cpu)
    try:
        cached = files.read_json(path, "")
    except files.UnreadableFile:
        cached = None
    if isinstance(cached, dict) and isinstance(cached.get("int8_speedup"), (int, float)):
        speedup = float(cached["int8_speedup"])
    else:
        log.info("timing %s in int8 and in float32 on this CPU (once: the verdict is cached)", backbone)
        speedup = measure_int8_speedup(backbone, weights, threads)
        path.parent.mkdir(parents=True, exist_ok=True)
        remember(path, backbone, threads, cpu, speedup)
    return Verdict("int8" if speedup >= MIN_SPEEDUP else "float32", speedup, cpu)


def remember(path, backbone, threads, cpu, speedup):
    """Caches a measured int8 speedup at ``path`` (``verdict_path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json_atomic(path, {"backbone": backbone, "threads": threads, "cpu": cpu, "int8_speedup": speedup,
                                   "measured": time.strftime("%Y-%m-%d %H:%M:%S")})


def measure_int8_speedup(backbone, weights, threads, rounds=ROUNDS):
    """float32's time per batch over int8's, for this backbone's LiteRT
    models on ``threads`` threads: both run in every round, in alternating
    order, and the median of the rounds' ratios is returned (a noisy
    neighbour slows both models of a round alike)."""
    from extract import backbones

    models = {precision: backbones.Backbone(backbone, weights, "litert", threads, precision)
              for precision in ("float32", "int8")}
    size = models["int8"].image_size
    frames = np.random.default_rng(0).integers(0, 256, (BATCH, size, size, 3), dtype=np.uint8)
    for model in models.values():
        model(frames)  # warm up: first calls plan buffers
    ratios = []
    for round_number in range(rounds):
        seconds = {}
        for precision in (("float32", "int8") if round_number % 2 == 0 else ("int8", "float32")):
            started = time.perf_counter()
            models[precision](frames)
            models[precision](frames)
            seconds[precision] = time.perf_counter() - started
        ratios.append(seconds["float32"] / seconds["int8"])
    return round(statistics.median(ratios), 3)
