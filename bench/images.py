"""What TensorBoard's pictures cost at many classes (issue 34 item 9).

    python -m bench.images                  # 101 and 700 classes, as drawn now
    python -m bench.images --unbounded      # the same with every class drawn, as before (700: minutes, GBs)

For each number of classes, a confusion matrix and a per-class chart of
synthetic held-out results (every class with 5-9 videos, a few confused) are
drawn as ``rnn.summaries`` draws them at each new checkpoint; each drawing
runs in a process of its own, whose wall time and peak resident memory are
reported (its own ``ru_maxrss``, Linux). Beyond ``rnn.summaries.MOST_CLASSES_DRAWN``
classes only the most confused (matrix) and worst-recall (chart) classes are
drawn; ``--unbounded`` draws all, which is what the images cost before.
"""

import argparse
import os
import subprocess
import sys
import time

from bench.common import REPO, print_table, save

_DRAW = """
import resource, sys, numpy as np
from rnn import summaries
classes, kind, unbounded = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
rng = np.random.default_rng(0)
confusion = np.diag(rng.integers(5, 10, classes))
for i in range(0, classes, 7):
    confusion[i, (i + 1) % classes] += 3
names = [f"class{i}" for i in range(classes)]
most = None if unbounded else summaries.MOST_CLASSES_DRAWN
if kind == "confusion_matrix":
    png = summaries.confusion_matrix_png(confusion, names, f"{classes} classes", most_classes=most)
else:
    rows = confusion.sum(1)
    per_class = {name: {"support": int(rows[i]), "recall": float(confusion[i, i] / rows[i]),
                        "precision": float(confusion[i, i] / max(confusion[:, i].sum(), 1))}
                 for i, name in enumerate(names)}
    png = summaries.per_class_png(per_class, f"{classes} classes", most_classes=most)
print(len(png), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure(classes, kind, unbounded):
    """Seconds (the process, start-up included), its peak MB and the PNG's
    bytes of one drawing, in a process of its own."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _DRAW, str(classes), kind, "1" if unbounded else "0"],
                            cwd=REPO, capture_output=True, text=True, check=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - started
    png_bytes, peak_kb = map(int, result.stdout.split()[-2:])
    return {"seconds": round(seconds, 2), "peak_mb": round(peak_kb / 1024, 1), "png_bytes": png_bytes}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="101,700")
    parser.add_argument("--unbounded", action="store_true", help="draw every class, as before the bound")
    args = parser.parse_args()
    results, rows = {}, []
    for classes in sorted(int(c) for c in args.classes.split(",")):
        for kind in ("per_class", "confusion_matrix"):
            r = measure(classes, kind, args.unbounded)
            results[f"{classes} {kind}"] = r
            rows.append([classes, kind, r["seconds"], r["peak_mb"], r["png_bytes"]])
    print_table("drawing one picture" + (" (every class)" if args.unbounded else ""),
                ["classes", "picture", "seconds", "peak MB (process)", "PNG bytes"], rows)
    save("images_unbounded" if args.unbounded else "images", {"results": results})


if __name__ == "__main__":
    main()
