"""Training under tf.distribute on this machine, and its communication on paper.

    python -m bench.distributed_training    # about 6 minutes on 2 CPU cores

``python train.py`` at its defaults (GRU, 2 layers of 256 units, global batch
32) on synthetic UCF-101-like features (50 x 1280 float32 per video, 101
classes), run as users run it, in rotated rounds:

  one device        --strategy auto (no GPU here: TensorFlow's default)
  2 replicas        --strategy mirrored --logical_cpus 2 (two logical CPU devices)
  2 workers         --strategy multi_worker, two processes on 127.0.0.1 (TF_CONFIG)

It reports training steps/s and examples/s (train.py's own count, start-up
excluded) and each way's ratio to one device. On 2 cores the replicas share
the same cores, so this measures the strategies' overhead, not a speed-up.
Then, on paper, the bytes each GPU sends and receives per step in a ring
all-reduce of the model's gradients for 2-8 GPUs.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from bench.common import REPO, print_table, save
from bench.training_input import write_shards
from rnn import distribute

WAYS = {
    "one device": ["--strategy", "auto"],
    "2 replicas (mirrored, 2 logical CPUs)": ["--strategy", "mirrored", "--logical_cpus", "2"],
    "2 workers (multi_worker, 2 processes)": ["--strategy", "multi_worker"],
}




def run_training(folder, logdir, extra, steps):
    """Trains; returns the chief's metrics.json ``train`` entry."""
    command = [sys.executable, "train.py", "--steps", str(steps), "--eval_every", str(10 * steps),
               "--logdir", str(logdir), "--run_name", "run", "--train_pattern", str(folder / "train-*.tfrecord"),
               "--eval_pattern", str(folder / "test-*.tfrecord"), "--progress=false", *extra]
    if "multi_worker" not in extra:
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    else:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in distribute.free_local_ports(2)]}
        processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={
            **os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
            for i in range(2)]
        for process in processes:
            _, stderr = process.communicate()
            if process.returncode:
                raise RuntimeError(stderr.decode())
    return json.loads((pathlib.Path(logdir) / "run" / "metrics.json").read_text())["train"]


def allreduce_table(parameters, bytes_per_value=4):
    """Ring all-reduce: each of N GPUs sends and receives 2 (N - 1) / N of the gradients per step."""
    size = parameters * bytes_per_value
    return [(gpus, 2 * (gpus - 1) / gpus * size) for gpus in (2, 4, 8)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from rnn import models, training

    batch = training.TrainConfig.batch_size
    runs = {way: [] for way in WAYS}
    names = list(WAYS)
    with tempfile.TemporaryDirectory() as workdir:
        folder = pathlib.Path(workdir) / "features"
        manifest = write_shards(folder, 512, classes=101)
        for round_number in range(args.rounds):
            for way in names[round_number % len(names):] + names[:round_number % len(names)]:
                logdir = pathlib.Path(workdir) / f"logs-{round_number}-{names.index(way)}"
                runs[way].append(run_training(folder, logdir, WAYS[way], args.steps)["examples_per_second"])
                print(f"round {round_number + 1}, {way}: {runs[way][-1]:.0f} examples/s", flush=True)
    results = {"steps": args.steps, "batch_size": batch, "rounds": args.rounds, "ways": {}}
    rows = []
    for way, rates in runs.items():
        ratio = statistics.median(rate / one for rate, one in zip(rates, runs["one device"]))
        rate = statistics.median(rates)
        results["ways"][way] = {"examples_per_second": rate, "steps_per_second": rate / batch,
                                "ratio_to_one_device": ratio}
        rows.append([way, f"{rate / batch:.2f}", f"{rate:.0f}", f"{ratio:.2f}"])
    print_table(f"train.py defaults (GRU 2x256, global batch {batch}), {args.steps} steps, medians of "
                f"{args.rounds} rotated rounds", ["way", "steps/s", "examples/s", "/ one device"], rows)

    model = models.build_model(models.ModelConfig(), len(manifest["class_names"]), manifest["feature_dim"],
                               manifest["max_frames"])
    parameters = model.count_params()
    results["parameters"] = parameters
    results["allreduce_bytes_per_gpu_per_step"] = {gpus: size for gpus, size in allreduce_table(parameters)}
    print_table(f"ring all-reduce of {parameters:,} float32 gradients ({4 * parameters / 2**20:.1f} MiB) per step",
                ["GPUs", "MiB sent and received per GPU per step"],
                [[gpus, f"{size / 2**20:.1f}"] for gpus, size in allreduce_table(parameters)])
    save("distributed_training", results)


if __name__ == "__main__":
    main()
