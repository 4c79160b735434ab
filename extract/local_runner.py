"""The local runner (the default): every pending shard extracted in this
process, on this machine, through one decode pool and one CNN, so that
frames of consecutive shards share CNN batches and decoding overlaps the CNN
throughout."""

import time

from common import console
from extract import backbones, extraction, shards


class LocalRunner:
    """Extracts pending shards here.

    Args:
      show_progress: a progress bar on a terminal (otherwise log lines).
      progress_seconds: seconds between progress log lines without a bar.
      backbone: a ready ``backbones.Backbone`` matching the config
        (benchmarks reuse one across runs); by default one is built.
    """

    name = "local"

    def __init__(self, show_progress=True, progress_seconds=30.0, backbone=None):
        self.show_progress = show_progress
        self.progress_seconds = progress_seconds
        self.backbone = backbone

    def start(self):
        pass

    def on_gpu(self):
        return bool(console.import_tensorflow().config.list_physical_devices("GPU"))

    def extract_pending(self, plan):
        """Returns ``(videos, frames, seconds)`` of the work done (start-up excluded)."""
        config = plan.config
        backbone = self.backbone or backbones.Backbone(config.backbone, config.weights, config.engine,
                                                         precision=config.precision, model=plan.model)
        started = time.monotonic()
        total = sum(len(shard.videos) for shard in plan.pending)
        with console.Progress(total, "video", "extracting", self.show_progress, self.progress_seconds,
                              work_unit="frames") as progress:
            videos, frames = shards.extract_shards(plan.pending, plan.output_dir, backbone, config, progress)
        return videos, frames, time.monotonic() - started


def extract(video_set, output_dir, config, split_source=None, overwrite=False, show_progress=True,
            progress_seconds=30.0, backbone=None):
    """``extraction.run`` with a ``LocalRunner``: the extraction of ``python -m extract``.

    Returns:
      A ``finalize.Summary``.
    """
    runner = LocalRunner(show_progress, progress_seconds, backbone)
    return extraction.run(video_set, output_dir, config, runner, split_source, overwrite)
