"""Training under tf.distribute (issue 10), as far as a 2-core machine without
GPUs can show it: MirroredStrategy over 2 logical CPU devices against one
device, and a real 2-process MultiWorkerMirroredStrategy run on 127.0.0.1
that loses a worker and is restarted."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, run
from features import temporal_order_examples, write_extraction
from rnn import distribute

CLASSES = ["class0", "class1", "class2", "class3"]


@pytest.fixture(scope="module")
def order_task(tmp_path_factory):
    """Train and test features of the temporal-order task, 4 train shards
    (so that 2 workers split them by file)."""
    folder = tmp_path_factory.mktemp("distributed_features")
    train_examples, test_examples = temporal_order_examples(256, seed=0), temporal_order_examples(64, seed=1)
    write_extraction(folder, {"train": train_examples, "test": test_examples}, CLASSES, max_frames=20)
    return folder


def _events(folder, tag):
    """[(file, [(step, value)])] for a scalar tag, file by file in name order."""
    from tensorboard.backend.event_processing import event_file_loader

    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        points = []
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    points.append((event.step, float(tf.make_ndarray(value.tensor))))
        found.append((path.name, points))
    return found


def test_mirrored_over_two_replicas_follows_the_one_device_trajectory(order_task, tmp_path):
    """Same global batch, same seed: the losses and gradient norms of each
    step agree, so --batch_size and --clip_norm mean the same under both.
    (Dropout off: each replica draws its own masks. The L2 penalty stays on:
    it must count once per global batch, not once per replica.)"""
    script = textwrap.dedent(f"""
        from rnn import distribute
        distribute.split_cpu(2)
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
        from rnn import training
        from common import console
        from rnn import models
        console.log_plainly()
        for name in ("one_device", "mirrored"):
            training.train(training.TrainConfig(
                model=models.ModelConfig(units=32, dropout=0, input_dropout=0),
                train_pattern={str(order_task / "train-*.tfrecord")!r},
                eval_pattern={str(order_task / "test-*.tfrecord")!r}, logdir={str(tmp_path)!r}, run_name=name,
                steps=30, log_every=1, eval_every=30, checkpoint_every=30, strategy=name, clip_norm=0.5))
    """)
    result = run([sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr
    assert "MirroredStrategy: 2 replica(s)" in result.stderr
    for tag, tolerance in (("metrics/loss", 2e-4), ("optim/gradient_norm", 2e-3)):
        one = [value for _, values in _events(tmp_path / "one_device" / "train", tag) for _, value in values]
        two = [value for _, values in _events(tmp_path / "mirrored" / "train", tag) for _, value in values]
        assert len(one) == len(two) == 30
        np.testing.assert_allclose(two, one, rtol=tolerance, atol=tolerance)
        assert one[0] != one[-1]  # it trained
    norms = [value for _, values in _events(tmp_path / "one_device" / "train", "optim/gradient_norm")
             for _, value in values]
    assert max(norms) > 0.5  # clipping was in play at the start


def _start_workers(order_task, logdir, steps):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in distribute.free_local_ports(2)]}
    command = [sys.executable, "train.py", "--strategy", "multi_worker", "--units", "32", "--steps", str(steps),
               "--checkpoint_every", "10", "--eval_every", "40", "--log_every", "5", "--logdir", str(logdir),
               "--run_name", "mw", "--train_pattern", str(order_task / "train-*.tfrecord"),
               "--eval_pattern", str(order_task / "test-*.tfrecord"), "--progress=false"]
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, start_new_session=True))
    return workers


def _stop(workers):
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=60)


def test_two_workers_train_write_one_run_and_resume_after_a_kill(order_task, tmp_path):
    workers = _start_workers(order_task, tmp_path, steps=120)
    checkpoints = tmp_path / "mw" / "checkpoints"
    try:
        deadline = time.monotonic() + 300
        while not (tf.train.latest_checkpoint(checkpoints) or "").endswith(("ckpt-20", "ckpt-30", "ckpt-40")):
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        workers[1].send_signal(signal.SIGKILL)  # the worker that is not the chief dies...
        time.sleep(2)
    finally:
        _stop(workers)  # ...and the chief, stuck in a collective, is stopped too
    killed_at = int(tf.train.latest_checkpoint(checkpoints).rsplit("-", 1)[1])
    assert killed_at < 120

    workers = _start_workers(order_task, tmp_path, steps=120)  # both restarted, the same command
    try:
        outputs = [w.communicate(timeout=600) for w in workers]
    finally:
        _stop(workers)
    assert [w.returncode for w in workers] == [0, 0], outputs
    chief_out, chief_err = outputs[0]
    assert f"(step {killed_at})" in chief_err and "resumed from" in chief_err
    assert "split by file between 2 workers" in chief_err
    assert "step 120" in chief_out and "test (64 videos, 4 classes): top-1" in chief_out and outputs[1][0] == ""

    run = tmp_path / "mw"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 120 and metrics["selected"]["test"]["top1"] >= 0.9
    # One set of outputs, all the chief's: nothing in the run folder but what train.py writes.
    from rnn import run_dir
    assert run_dir.other_files(run) == []
    assert len(list((run / "train").glob("events.out.tfevents.*"))) == 2  # one per session
    # Monotone steps across both sessions: what the first logged after its last checkpoint was dropped.
    steps = [step for _, points in _events(run / "train", "metrics/loss") for step, _ in points]
    assert steps == sorted(set(steps)) and steps[-1] == 120 and steps[0] == 5


def test_mixed_precision_trains_with_loss_scaling_and_keeps_cudnn_layers(order_task, tmp_path):
    """--mixed_precision (on by default with GPUs): float16 compute, float32
    logits, a loss-scaled optimizer, and recurrent layers that still meet
    Keras' conditions for the fused cuDNN kernels. (float16 on a CPU is slow:
    a few small steps only.)"""
    import keras
    import importlib

    keras_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")

    from rnn import models, training

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.build_model(models.ModelConfig(cell="lstm", units=8, bidirectional=True), 4, 16, 20)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    recurrent = [layer for layer in model.layers if "lstm" in layer.name or "bidirectional" in layer.name]
    for layer in recurrent:
        for cell in (getattr(layer, "forward_layer", layer), getattr(layer, "backward_layer", layer)):
            assert cell.dtype_policy.compute_dtype == "float16"
            # Keras' own test of the arguments (the GPU half of cudnn_ok cannot hold here).
            assert cell.recurrent_dropout == 0 and keras_rnn._do_lstm_arguments_support_cudnn(
                cell.activation, cell.recurrent_activation, cell.unroll, cell.use_bias)
    assert model.get_layer("classifier").dtype_policy.compute_dtype == "float32"

    config = training.TrainConfig(model=models.ModelConfig(units=8), train_pattern=str(order_task / "train-*.tfrecord"),
                               eval_pattern=str(order_task / "test-*.tfrecord"), logdir=str(tmp_path), steps=4,
                               batch_size=8, log_every=2, eval_every=4, checkpoint_every=4, mixed_precision=True)
    metrics = training.train(config)
    assert metrics["step"] == 4 and np.isfinite(metrics["final"]["test"]["loss"])
    reader = tf.train.load_checkpoint(str(tmp_path / "gru" / "checkpoints"))
    assert any("dynamic_scale" in name for name in reader.get_variable_to_shape_map())
