"""Where training runs: one device, the GPUs of one machine, or several
machines, with TensorFlow's own distribution strategies.

``--strategy``:
  ``auto``          ``mirrored`` when more than one GPU is visible, else TensorFlow's
                    default (no distribution: today's single-device training)
  ``one_device``    the first GPU, else the CPU
  ``mirrored``      ``tf.distribute.MirroredStrategy``: one replica per GPU (with
                    no GPU, per logical CPU device: ``--logical_cpus``, for tests)
  ``multi_worker``  ``tf.distribute.MultiWorkerMirroredStrategy`` over the
                    cluster that ``TF_CONFIG`` describes (every worker runs the
                    same command with its own ``TF_CONFIG``)

Under every strategy ``--batch_size`` is the global batch: each step sees
that many videos, split between the replicas, so a run means the same on one
device and on eight. The chief (``TF_CONFIG``'s ``chief``, else worker 0) is
the only one that writes to the run folder.
"""

import logging
import os

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")

log = logging.getLogger(__name__)


def split_cpu(logical_cpus):
    """Splits the CPU into ``logical_cpus`` logical devices, so that mirrored
    training can be exercised without GPUs. Must run before TensorFlow uses a
    device."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)


def make_strategy(name):
    """The ``tf.distribute.Strategy`` called ``name`` (see the module docstring).
    With ``multi_worker``, call it before TensorFlow runs anything.

    Raises:
      ValueError: an unknown name, or ``multi_worker`` without ``TF_CONFIG``.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown --strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        # Created before anything else touches TensorFlow's devices: it
        # configures the runtime's collective ops, which must come first.
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multi_worker needs TF_CONFIG, the cluster and this worker's place in "
                             "it (see README, 'Training on several GPUs or machines')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if len(gpus) <= 1:
            return tf.distribute.get_strategy()
        name = "mirrored"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def _cluster(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return resolver, spec


def is_chief(strategy):
    """True for the one process that writes the run folder."""
    resolver, spec = _cluster(strategy)
    if not spec:
        return True
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def workers(strategy):
    """Number of worker processes (1 unless multi-worker)."""
    _, spec = _cluster(strategy)
    return sum(len(tasks) for kind, tasks in spec.items() if kind in ("chief", "worker")) or 1


def describe(strategy):
    """One line: the strategy, its replicas and workers."""
    kind = type(strategy).__name__
    if kind == "_DefaultDistributionStrategy":
        kind = "one device"
    return (f"{kind}: {strategy.num_replicas_in_sync} replica(s) in {workers(strategy)} worker(s)"
            + ("" if is_chief(strategy) else " (this process is not the chief: it writes no outputs)"))


def distribute_input(strategy, dataset, files):
    """Splits the training input between workers and replicas.

    Between workers: by file when there are at least as many shard files as
    workers (each worker reads its own files), else by example (every worker
    reads every file and keeps its share). Within a worker, each global batch
    is split between its replicas.

    Returns:
      ``(distributed dataset, a sentence saying how it was split)``.
    """
    import tensorflow as tf

    count = workers(strategy)
    by_file = len(files) >= count
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (tf.data.experimental.AutoShardPolicy.FILE if by_file
                                                         else tf.data.experimental.AutoShardPolicy.DATA)
    dataset = dataset.with_options(options)
    if count == 1:
        how = f"{len(files)} shard files read by one worker"
    elif by_file:
        how = f"{len(files)} shard files split by file between {count} workers"
    else:
        how = (f"only {len(files)} shard files for {count} workers: split by example (every worker reads "
               "every file); extract with smaller --videos_per_shard to split by file")
    if strategy.num_replicas_in_sync > 1:
        how += f"; each global batch split between {strategy.num_replicas_in_sync} replicas"
    return strategy.experimental_distribute_dataset(dataset), how


def barrier(strategy):
    """Returns when every worker got here (a tiny all-reduce); a no-op on one worker."""
    if workers(strategy) == 1:
        return
    import tensorflow as tf

    @tf.function
    def everyone():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)

    everyone()



def free_local_ports(count):
    """``count`` TCP ports free on 127.0.0.1 now, for a multi-worker cluster
    on one machine (tests, benchmarks, a first try of ``TF_CONFIG``)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
