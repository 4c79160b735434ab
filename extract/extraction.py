"""One extraction, whatever runs it: lock the output folder, plan
(``extract.plan``), extract the pending shards with a runner, finalize
(``extract.finalize``).

A runner is an object with a ``name`` (recorded in the manifest),
``start()`` (checks that it can run, e.g. that its cluster answers, before
anything is written; raises ValueError with a sentence if not),
``on_gpu() -> bool`` (whether its CNN runs on GPUs, which decides what
``--precision auto`` means for a new output) and ``extract_pending(plan) ->
(videos, frames, seconds)``, which must leave every shard of ``plan.pending``
committed with ``plan.config``'s settings and, for int8, ``plan.model``
(``extract.shards`` does the work for one or more shards):
``extract.local_runner`` in this process, ``extract.ray_runner`` on a Ray
cluster. Both produce the same files.
"""

import logging
import time

from common import console
from extract import finalize, plan as plan_lib
from records import files, writer

log = logging.getLogger(__name__)


class OutputUnwritable(Exception):
    """The output folder cannot take more data (a full disk); what is
    committed is kept, and the same command resumes."""


def run(video_set, output_dir, config, runner, split_source=None, overwrite=False):
    """Extracts features of every video in ``video_set`` into ``output_dir``.

    Running it again with the same arguments resumes an interrupted run and
    is a quick no-op on a finished one.

    Args:
      video_set: a ``dataset.VideoSet``.
      output_dir: folder for shards, ``manifest.json``, ``errors.tsv``.
      config: a ``plan.ExtractConfig``.
      runner: what extracts the pending shards (``local_runner.LocalRunner``...).
      split_source: how the splits were made (recorded; must match on resume).
      overwrite: delete the previous extraction's own files first.

    Returns:
      A ``finalize.Summary``.

    Raises:
      ValueError: a file stands where the output folder must go, or the
        runner cannot start (nothing was written).
      plan.ExtractionRefused: ``output_dir`` holds an extraction with other
        settings or videos, or files that are not ours where ours would go,
        or another run is writing there.
      OutputUnwritable: the disk filled up.
    """
    started = time.monotonic()
    output_dir = str(output_dir)
    # Checked before anything is written: a file where a folder must go, a
    # cluster that does not answer.
    files.check_folder_path(output_dir, "--output_dir")
    files.check_folder_path(files.join(output_dir, writer.INDEX_DIR), "--output_dir's index folder")
    runner.start()
    files.makedirs(output_dir)
    try:
        with files.exclusive(output_dir, f"another extraction is writing to {output_dir}, or a train.py is "
                                         "reading its shards; wait for it to end"):
            plan = plan_lib.prepare(video_set, output_dir, config, split_source, overwrite, runner.on_gpu)
            videos = frames = 0
            extract_seconds = 0.0
            if plan.pending:
                log.info("%d of %d shards to do (%d videos); loading %s (%s)", len(plan.pending), len(plan.shards),
                         sum(len(s.videos) for s in plan.pending), config.backbone, plan.config.precision)
                videos, frames, extract_seconds = runner.extract_pending(plan)
                plan.read_indexes()
            return finalize.finalize(plan, runner.name, videos, frames, extract_seconds,
                                     time.monotonic() - started)
    except files.FolderBusy as e:
        raise plan_lib.ExtractionRefused(str(e)) from None
    except Exception as e:
        if files.is_disk_full(e):
            raise OutputUnwritable(f"the disk holding {output_dir} is full ({console.tensorflow_error_text(e)}). "
                                   "Free some space and run the same command again: finished shards are kept.") \
                from None
        raise
