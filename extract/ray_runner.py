"""The Ray runner: the pending shards of an extraction, scheduled on a Ray
cluster (``python -m extract --runner ray [--ray_address HOST:PORT]``).

Ray is used only as a scheduler. The driver (this process) plans, checks,
locks and finalizes exactly as the local runner does (``extract.extraction``);
each pending shard becomes one task for a pool of Ray actors, and every
actor builds its backbone once and runs the project's own
``shards.extract_shards`` on one shard per task, committing it with the same
atomic shard commit. So the output folder is the same as a local run's, and
so are the guarantees:

- a worker killed mid-shard loses only that attempt (a hidden ``.partial``
  file): the driver gives the shard to another worker, and Ray restarts the
  dead one (``max_restarts``), on another node if its node is gone;
- a shard attempted twice is committed once (``extract_shards`` skips a
  committed shard; two attempts racing both commit the same videos);
- the driver is the single point of failure: killed, it leaves committed
  shards behind, and the same command again does only the missing ones.

Workers must see the videos and the output folder at the same paths (a
shared file system, or object storage for the output), and have this
project installed; ``runtime_env`` passes them the environment that matters
(the converted-model cache, the module path).

Sizing: with the TensorFlow engine on GPUs, one worker per GPU with an equal
share of the CPUs for decoding; on CPUs, workers of ``cpus_per_worker``
cores (LiteRT threads and ffmpeg decoders both follow the share).
"""

import logging
import os
import socket
import time

from common import cache, console
from extract import backbones, shards

log = logging.getLogger(__name__)

DEFAULT_CPUS_PER_WORKER = 4
# How long the driver tries to reach a cluster's head before giving up.
CONNECT_SECONDS = 30
# How long the driver waits without any worker alive before giving up.
NO_WORKER_TIMEOUT_SECONDS = 600


class ShardWorker:
    """A Ray actor: one backbone, one shard per call.

    Args:
      config: the plan's ``ExtractConfig`` (precision settled).
      cpus: CPU cores of this worker.
    """

    def __init__(self, config, cpus):
        import dataclasses

        console.log_plainly()
        self.config = dataclasses.replace(config, decode_workers=config.decode_workers or cpus)
        self.cpus = cpus
        self.backbone = None

    def ready(self, model=None):
        """Builds the backbone (once; again after a restart); returns the
        process id. ``model``: with int8, the exact LiteRT model the plan
        holds (every worker runs the same bytes). It comes with each call,
        not to the constructor, because Ray warns that a restartable actor
        whose constructor takes an object-store argument may not restart."""
        if self.backbone is None:
            config = self.config
            self.backbone = backbones.Backbone(config.backbone, config.weights, config.engine, threads=self.cpus,
                                                precision=config.precision, model=model)
        return os.getpid()

    def extract(self, shard, output_dir, model=None):
        """Extracts and commits one shard; returns ``(videos, frames)``
        (``model`` as for ``ready``: an actor restarted since its last
        ``ready`` builds its backbone here)."""
        self.ready(model)
        return shards.extract_shards([shard], output_dir, self.backbone, self.config)


def _runtime_env():
    """What workers need from the driver's environment: the converted-model
    cache (so that a conversion done once serves every worker on the machine),
    and where this project's modules are."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"VIDEO_FEATURES_CACHE": str(cache.cache_dir()), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))}
    return {"env_vars": env}


class RayRunner:
    """Extracts pending shards on a Ray cluster.

    Args:
      address: ``HOST:PORT`` of a running cluster's head, or None to start a
        local Ray instance with this machine's usable cores for the run.
      workers: number of actors (default: one per GPU with the TensorFlow
        engine on GPUs, else cluster CPUs // ``cpus_per_worker``).
      cpus_per_worker: CPU cores per actor (default: an equal share of the
        CPUs per GPU, or ``DEFAULT_CPUS_PER_WORKER`` capped by the largest
        node).
      show_progress, progress_seconds: as for the local runner.
    """

    name = "ray"

    def __init__(self, address=None, workers=None, cpus_per_worker=None, show_progress=True,
                 progress_seconds=30.0):
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.show_progress = show_progress
        self.progress_seconds = progress_seconds

    def start(self):
        """Checks that the cluster's head answers (for ``CONNECT_SECONDS`` at
        most), before anything is written: a wrong ``--ray_address`` is one
        sentence, not minutes of Ray's own retries."""
        if not self.address or self.address == "auto":
            return
        host, _, port = self.address.rpartition("://")[2].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--ray_address {self.address!r} is not HOST:PORT (ray start --head prints it)")
        deadline = time.monotonic() + CONNECT_SECONDS
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ValueError(f"no Ray cluster answers at {self.address} (tried for {CONNECT_SECONDS} s: "
                                     f"{e.strerror or e}). Check that 'ray start --head --port={port}' runs on "
                                     f"{host} and that this machine can reach that port.") from None
                time.sleep(1)

    def _connect(self):
        import sys

        import ray

        if ray.is_initialized():
            return ray
        if not sys.stderr.isatty():
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # worker log lines without colour codes in files

        if self.address:
            ray.init(address=self.address, runtime_env=_runtime_env(), log_to_driver=True,
                     logging_level=logging.WARNING)
        else:
            # A local instance has token authentication on by default, and
            # Ray says so at every start: a notice, not something to act on.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(num_cpus=backbones.usable_cores(), runtime_env=_runtime_env(), include_dashboard=False,
                     log_to_driver=True, logging_level=logging.WARNING)
        return ray

    def on_gpu(self):
        """True if the cluster has GPUs (connecting to it)."""
        ray = self._connect()
        return any(node["Resources"].get("GPU", 0) > 0 for node in ray.nodes() if node["Alive"])

    def _sizes(self, ray, config):
        """(workers, CPUs per worker, GPUs per worker) for this cluster."""
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        cpus = sum(node.get("CPU", 0) for node in nodes)
        gpus = sum(node.get("GPU", 0) for node in nodes)
        engine, _ = backbones.resolve(backbones.get_spec(config.backbone), config.engine, config.precision, gpus > 0)
        if gpus > 0 and engine == "tensorflow":
            workers = self.workers or int(gpus)
            cpus_each = self.cpus_per_worker or max(1, int(cpus // workers))
            return workers, cpus_each, 1
        largest = max(int(node.get("CPU", 0)) for node in nodes)
        cpus_each = self.cpus_per_worker or max(1, min(DEFAULT_CPUS_PER_WORKER, largest))
        return self.workers or max(1, int(cpus // cpus_each)), cpus_each, 0

    def extract_pending(self, plan):
        """Returns ``(videos, frames, seconds)`` of the work done (start-up excluded)."""
        ray = self._connect()
        try:
            workers, cpus_each, gpus_each = self._sizes(ray, plan.config)
            extractor = ray.remote(ShardWorker).options(num_cpus=cpus_each, num_gpus=gpus_each,
                                                            max_restarts=-1, max_task_retries=0)
            actors = [extractor.remote(plan.config, cpus_each) for _ in range(workers)]
            log.info("Ray: %d workers of %d CPU%s%s", workers, cpus_each, "s" if cpus_each > 1 else "",
                     f" and {gpus_each} GPU" if gpus_each else "")
            try:
                return self._schedule(ray, actors, plan, ray.put(plan.model))
            finally:
                for actor in actors:
                    ray.kill(actor, no_restart=True)
        finally:
            ray.shutdown()

    def _schedule(self, ray, actors, plan, model):
        """Keeps every live actor busy with one shard until all are committed
        (``model``: the object-store reference of the plan's model bytes)."""
        to_do = list(plan.pending)
        total = sum(len(shard.videos) for shard in to_do)
        in_flight = {}  # task -> (actor, shard)
        probes = {actor.ready.remote(model): actor for actor in actors}  # actors not known to be alive yet
        idle = []
        videos = frames = 0
        started = None  # when the first worker is ready: start-up is not extraction time
        last_alive = time.monotonic()
        with console.Progress(total, "video", "extracting (ray)", self.show_progress,
                              self.progress_seconds, work_unit="frames") as progress:
            while to_do or in_flight:
                while idle and to_do:
                    actor, shard = idle.pop(), to_do.pop(0)
                    in_flight[actor.extract.remote(shard, plan.output_dir, model)] = (actor, shard)
                if in_flight or idle:
                    last_alive = time.monotonic()
                elif time.monotonic() - last_alive > NO_WORKER_TIMEOUT_SECONDS:
                    raise RuntimeError(f"no Ray worker has been alive for {NO_WORKER_TIMEOUT_SECONDS} s; "
                                       "check the cluster, then run the same command again to finish")
                waiting = list(in_flight) + list(probes)
                done = ray.wait(waiting, num_returns=1, timeout=5.0)[0] if waiting else []
                for ref in done:
                    if ref in probes:
                        actor = probes.pop(ref)
                        try:
                            ray.get(ref)
                            idle.append(actor)
                            started = started or time.monotonic()
                        except ray.exceptions.RayActorError:
                            probes[actor.ready.remote(model)] = actor  # restarting: ask again
                        continue
                    actor, shard = in_flight.pop(ref)
                    try:
                        shard_videos, shard_frames = ray.get(ref)
                    except ray.exceptions.RayActorError as e:
                        # The worker died mid-shard: another one does the
                        # shard; this one is used again once Ray restarts it.
                        log.warning("a Ray worker died while extracting %s (%s); the shard goes to another "
                                    "worker", shard.name, type(e).__name__)
                        to_do.append(shard)
                        probes[actor.ready.remote(model)] = actor
                        continue
                    except ray.exceptions.RayTaskError as e:
                        raise e.as_instanceof_cause() from None
                    videos += shard_videos
                    frames += shard_frames
                    idle.append(actor)
                    progress.update(len(shard.videos), work=shard_frames)
        return videos, frames, time.monotonic() - (started or time.monotonic())
