"""Phase 1 of an extraction, shared by every runner: plan the shards and
decide what is left to do.

Under the output folder's lock, ``prepare``

1. with ``overwrite``, deletes the previous extraction's own files (those its
   manifest and index name) and refuses a folder holding ``.tfrecord`` files
   that no manifest of ours lists;
2. deals every video into a shard, the same way on every run;
3. refuses to add to an output made with other settings or other videos;
4. settles the precision (``--precision auto`` keeps an existing folder's;
   a new one gets the fastest correct one: on CPUs, int8 only where it was
   measured faster here, ``extract.precision_choice``) and, for int8, the exact quantized
   model, stored in the folder (``backbone.tflite``) so that every worker, a
   resumed run and ``predict`` compute features with the same bytes;
5. writes the starting manifest (``"complete": false``, the settings and the
   planned shard names, so that a later run knows which files are its own).

The result, a ``Plan``, says which shards are committed and which are
pending; the runner extracts the pending ones (``extract.shards``) and then
``extract.finalize`` writes the final manifest.
"""

import dataclasses
import hashlib
import logging
import math
import random
import typing

from common import memory
from common.console import a_few, check_number
from extract import backbones, precision_choice
from extract.video import DEFAULT_TIMEOUT_SECONDS, file_state, max_frames_for
from records import files
from records import manifest as manifest_lib
from records import writer

log = logging.getLogger(__name__)

# A Kinetics-trained streaming video CNN: its features carry motion (on
# held-out JHMDB movies, +18 points of top-1 over EfficientNet-Lite0's
# ImageNet features, BENCHMARKS.md section 11).
DEFAULT_BACKBONE = "movinet_a0_stream"
# The demo's backbone: its weights come with the install, so the demo runs
# offline on a fresh machine (movinet_a0_stream downloads its model once).
DEMO_BACKBONE = "efficientnet_lite0"
ERRORS_NAME = "errors.tsv"
WARNINGS_NAME = "warnings.tsv"
MODEL_NAME = manifest_lib.MODEL_NAME
# Manifest entries that must match for a run to add to an existing output.
SETTINGS_KEYS = manifest_lib.FEATURE_KEYS + ("dtype", "videos_per_shard", "split_source")
# Decoded videos may wait for the CNN, a few per decoder, so that one slow
# clip never idles the rest; at most this share of the machine's memory may
# hold their frames.
# What ffmpeg takes for -t and the fps filter, written without an exponent
# (ffmpeg refuses "-t 1e+300" and cannot time frames at --fps 1e-300): one
# frame per 100 s to 1000 frames/s, from 10 ms to a day of each video.
FPS_RANGE = (0.01, 1000.0)
SECONDS_RANGE = (0.01, 86400.0)
VIDEOS_IN_FLIGHT_PER_DECODER = 4


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """How to extract (see ``python -m extract --help`` for each setting).

    Raises:
      ValueError: a setting out of range (the message names the flag).
    """

    backbone: str = DEFAULT_BACKBONE
    weights: typing.Optional[str] = None  # None: the backbone's pretrained weights (filled in)
    engine: str = "auto"
    precision: str = "auto"  # see backbones.resolve; settled per output folder by ``prepare``
    fps: float = 5.0
    seconds: float = 10.0
    dtype: str = "float32"
    batch_size: typing.Optional[int] = None  # None: the engine's default
    decode_workers: typing.Optional[int] = None  # None: the CPU cores this process may use
    videos_per_shard: int = 100
    decode_timeout: float = DEFAULT_TIMEOUT_SECONDS  # seconds one ffmpeg may take for one video

    def __post_init__(self):
        check_number("fps", self.fps, minimum=FPS_RANGE[0], maximum=FPS_RANGE[1])
        check_number("seconds", self.seconds, minimum=SECONDS_RANGE[0], maximum=SECONDS_RANGE[1])
        check_number("decode_timeout", self.decode_timeout, above=0)
        for flag in ("videos_per_shard", "decode_workers", "batch_size"):
            check_number(flag, getattr(self, flag), minimum=1, optional=flag != "videos_per_shard")
        spec = backbones.get_spec(self.backbone)
        if self.weights is None:
            object.__setattr__(self, "weights", spec.pretrained)  # frozen: filled in once, here
        backbones.check_weights(spec, self.weights)
        backbones.check_engine_and_precision(spec, self.engine, self.precision)
        if spec.streaming and self.batch_size is not None:
            raise ValueError(f"--batch_size does not apply to {self.backbone}: it reads one frame per call, and "
                             "videos in parallel (one per CPU core)")
        if self.max_frames < 1:
            raise ValueError(f"--fps {self.fps:g} x --seconds {self.seconds:g} rounds to {self.max_frames} frames "
                             "per video; ask for at least one")
        self._check_frame_memory(spec.image_size)

    def _check_frame_memory(self, image_size):
        """Refuses settings whose decoded frames in flight would not fit in
        this machine's memory budget (``common.memory``: ``--fps 1e9`` once
        made each ffmpeg grow to 11 GB)."""
        frame_bytes = image_size * image_size * 3
        frames = self.max_frames * self.videos_in_flight() + (self.batch_size or 0)
        if frames * frame_bytes > memory.budget():
            batch = f" and a CNN batch of {self.batch_size}" if self.batch_size else ""
            raise ValueError(
                f"--fps {self.fps:g} x --seconds {self.seconds:g} = {self.max_frames} frames per video; "
                f"{self.videos_in_flight()} videos in flight ({VIDEOS_IN_FLIGHT_PER_DECODER} per decoder){batch} "
                f"of {image_size}x{image_size}x3-byte frames would hold {memory.gib(frames * frame_bytes)} of "
                f"frames, more than {memory.describe_budget()}. Lower --fps, --seconds, --decode_workers or "
                "--batch_size.")

    @property
    def max_frames(self):
        return max_frames_for(self.fps, self.seconds)

    def decoders(self):
        """Videos decoded at once: ``decode_workers`` if set, else one per CPU
        core this process may use (its affinity mask: a container's or a Ray
        worker's share, not the whole machine)."""
        return self.decode_workers or backbones.usable_cores()

    def videos_in_flight(self):
        """Videos being decoded or waiting for the CNN at most (bounds memory)."""
        return VIDEOS_IN_FLIGHT_PER_DECODER * self.decoders()

    def batch_size_for(self, backbone):
        """Frames per CNN call: ``batch_size`` if set, else the engine's default."""
        return self.batch_size or backbone.default_batch_size


@dataclasses.dataclass
class Shard:
    split: str
    name: str
    videos: list


class ExtractionRefused(Exception):
    """The output folder holds work that this run must not mix with, or touch."""


@dataclasses.dataclass
class Plan:
    """What an extraction is to do, decided under the output folder's lock.

    Attributes:
      output_dir: the output folder.
      video_set: the ``dataset.VideoSet``.
      config: the ``ExtractConfig``.
      settings: the manifest's settings entries.
      shards: every planned ``Shard``.
      indexes: shard name -> its committed index, or None while pending.
      was_complete: the folder held a finished extraction of these videos.
      retried: ids of the videos that had failed in a way worth another try;
        their shards are pending again.
      model: with int8, the exact LiteRT model (bytes) every runner must use.
      pending: the shards that were not committed when the run started.
    """

    output_dir: str
    video_set: typing.Any
    config: ExtractConfig
    settings: dict
    shards: list
    indexes: dict
    was_complete: bool
    retried: list = dataclasses.field(default_factory=list)
    model: typing.Optional[bytes] = None
    pending: list = dataclasses.field(init=False)

    def __post_init__(self):
        self.pending = [shard for shard in self.shards if self.indexes[shard.name] is None]

    def read_indexes(self):
        """Reads the indexes of the shards that were pending, once the runner
        has extracted them.

        Raises:
          RuntimeError: a shard is still not committed.
        """
        for shard in self.pending:
            self.indexes[shard.name] = writer.read_committed_index(self.output_dir, shard.name)
        missing = [shard.name for shard in self.pending if self.indexes[shard.name] is None]
        if missing:
            raise RuntimeError(f"shards {a_few(missing)} were not committed; run the same command again")
        # Attempts that were killed (a worker lost mid-shard, then the shard
        # redone elsewhere) left their unfinished files behind.
        for shard in self.pending:
            for leftover in writer.partial_files(self.output_dir, shard.name):
                files.remove(leftover)


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


def settings_of(config, video_set, split_source):
    """The manifest entries that say how features were made (``SETTINGS_KEYS``)."""
    spec = backbones.get_spec(config.backbone)
    return {
        "backbone": config.backbone,
        **backbones.describe_weights(config.weights, spec),
        "image_size": spec.image_size,
        "feature_dim": spec.feature_dim,
        "fps": config.fps,
        "seconds": config.seconds,
        "max_frames": config.max_frames,
        "dtype": config.dtype,
        "engine": config.engine,
        "precision": config.precision,
        "videos_per_shard": config.videos_per_shard,
        "split_source": split_source,
        "class_names": video_set.class_names,
    }


def own_shards(output_dir, manifest):
    """Names of the shards that an extraction of ours planned in ``output_dir``:
    those its manifest lists, and those an index file of ours names (manifests
    of older versions listed shards only once complete)."""
    names = {name for split in (manifest or {}).get("splits", {}).values() for name in split.get("shards", [])}
    for index_file in files.matching(files.join(output_dir, writer.INDEX_DIR), "*.tfrecord.json"):
        try:
            index = files.read_json(index_file, "")
        except files.UnreadableFile:
            continue
        if isinstance(index, dict) and index.get("shard") == files.basename(index_file)[:-len(".json")]:
            names.add(index["shard"])
    return names


def own_files(output_dir, manifest, shard_names):
    """Relative paths of every file an extraction of ours may have written
    in ``output_dir``, for the given shards (whether or not they exist)."""
    def leftovers(folder, pattern):
        return [files.basename(path) for path in files.matching(files.join(output_dir, *folder), pattern)]

    names = []
    for shard in shard_names:
        names += [shard, f"{writer.INDEX_DIR}/{shard}.json"]
        names += [files.basename(path) for path in writer.partial_files(output_dir, shard)]
        names += [f"{writer.INDEX_DIR}/{name}"
                  for name in leftovers([writer.INDEX_DIR], f".{files.escape(shard)}.json.*.partial")]
    if manifest is not None:
        for name in (manifest_lib.MANIFEST_NAME, ERRORS_NAME, WARNINGS_NAME, *([MODEL_NAME] if "model" in manifest
                                                                               else [])):
            names += [name] + leftovers([], f".{name}.*.partial")
    return names


def shard_files(output_dir):
    """Names of the ``.tfrecord`` files in ``output_dir``."""
    return [files.basename(path) for path in files.matching(output_dir, "*.tfrecord")]


def _refuse_foreign_shards(output_dir, ours, remedy):
    foreign = sorted(name for name in shard_files(output_dir) if name not in ours)
    if foreign:
        raise ExtractionRefused(f"{output_dir} holds {len(foreign)} .tfrecord files that no manifest of "
                                f"python -m extract lists ({a_few(foreign)}); they are not ours to replace or delete. "
                                f"{remedy}")


def _clear_previous(output_dir, existing):
    """``--overwrite``: deletes the previous extraction's own files, and nothing else."""
    ours = own_shards(output_dir, existing)
    _refuse_foreign_shards(output_dir, ours, "Move them elsewhere, or use another --output_dir.")
    files.delete_own_files(output_dir, own_files(output_dir, existing, ours))


def _refuse_to_overwrite_others(output_dir, existing, shards, config):
    """A new extraction must not replace files that are not ours: a user's
    ``errors.tsv``, say, in the folder given as ``--output_dir``."""
    if existing is not None:
        return
    our_shards = own_shards(output_dir, None)
    _refuse_foreign_shards(output_dir, our_shards, "Use another --output_dir (or move them).")
    ours = own_files(output_dir, None, our_shards)
    would_write = [manifest_lib.MANIFEST_NAME, ERRORS_NAME, WARNINGS_NAME]
    would_write += [MODEL_NAME] if config.precision == "int8" else []
    would_write += [f"{writer.INDEX_DIR}/{shard.name}.json" for shard in shards]
    theirs = [name for name in would_write if files.exists(files.join(output_dir, name)) and name not in ours]
    if theirs:
        raise ExtractionRefused(f"{output_dir} holds {', '.join(theirs)}, which python -m extract would "
                                "replace but did not write; use another --output_dir")


def _check_resumable(output_dir, existing, settings, shards):
    """Refuses to add to an output made with other settings or other videos.

    Returns:
      shard name -> committed index (or None) for every planned shard.
    """
    if existing is None:
        return {shard.name: None for shard in shards}
    changes = manifest_lib.describe_differences(existing, settings, SETTINGS_KEYS, "there", "now")
    if changes:
        raise ExtractionRefused(f"{output_dir} holds features made with other settings ({changes}). "
                                "Use another --output_dir, or --overwrite to delete them and start over.")
    planned_names = {shard.name for shard in shards}
    stale = [name for name in shard_files(output_dir) if name not in planned_names]
    committed = {}
    for shard in shards:
        index = writer.read_committed_index(output_dir, shard.name)
        mismatch = index and writer.content_mismatch(output_dir, shard.name, index)
        if mismatch:
            raise ExtractionRefused(f"{files.join(output_dir, shard.name)} is not the shard this extraction wrote "
                                    f"({mismatch}): another extraction's shard copied over it? It is not ours to "
                                    "replace: move it away, and run the same command again to extract it anew.")
        if index is not None:
            stored = {v["video_id"] for v in index["videos"]} | {e["video_id"] for e in index["errors"]}
            if stored != {video.video_id for video in shard.videos}:
                stale.append(shard.name)
        committed[shard.name] = index
    if stale:
        raise ExtractionRefused(f"the videos found now are not the ones {output_dir} was started with "
                                f"(shards {a_few(sorted(stale))} disagree). Use --overwrite to start over.")
    return committed


def _settle_precision(config, existing, on_gpu):
    """The config with its precision settled: ``auto`` keeps the one an
    existing output folder records (so the same command still resumes a
    float32 extraction made before int8 became the default), else takes the
    fastest correct one here (``backbones.resolve``). An explicit precision
    that differs from the folder's is refused later, like any other setting.
    """
    if config.precision != "auto":
        return config
    spec = backbones.get_spec(config.backbone)
    if existing is not None:
        precision = existing["precision"]
        try:
            backbones.check_engine_and_precision(spec, config.engine, precision)
        except ValueError as e:
            raise ExtractionRefused(f"the output folder holds {precision} features: {e}") from None
    else:
        _, precision = backbones.resolve(spec, config.engine, "auto", on_gpu())
        if precision == "int8" and not spec.streaming:  # auto on CPUs: int8 only where it is measurably faster here
            verdict = precision_choice.int8_verdict(config.backbone, config.weights, backbones.usable_cores())
            log.info("--precision auto: %s", verdict)
            precision = verdict.precision
    return dataclasses.replace(config, precision=precision)


def _quantized_model(output_dir, existing, config):
    """The int8 model of this extraction: the one stored in the folder if its
    digest is the manifest's, else this machine's quantization (cached) or,
    for a streaming backbone, its published model with the feature outputs
    added, which must then be the same bytes as the manifest records.

    Returns:
      ``(content, manifest entry, whether the folder lacks it)``.

    Raises:
      ExtractionRefused: the stored model is gone or damaged and this machine
        quantizes the backbone into other bytes.
    """
    path = files.join(output_dir, MODEL_NAME)
    recorded = (existing or {}).get("model")
    stored = manifest_lib.read_model(output_dir, recorded) if recorded else None
    if stored is not None:
        return stored, recorded, False
    content = backbones.litert_model(config.backbone, config.weights, "int8")
    entry = {"file": MODEL_NAME, "sha256": hashlib.sha256(content).hexdigest(),
             **backbones.model_provenance(backbones.get_spec(config.backbone))}
    if recorded and entry["sha256"] != recorded["sha256"]:
        raise ExtractionRefused(f"{path} is {'damaged' if files.exists(path) else 'missing'}, and this machine "
                                f"makes {config.backbone}'s int8 model into other bytes (SHA-256 "
                                f"{entry['sha256'][:12]}..., not {recorded['sha256'][:12]}...), which would give "
                                "features unlike those already written. Restore the file, or use --overwrite to "
                                "start over.")
    return content, entry, True


def worth_retrying(error, path):
    """Whether a video that failed (an index's error entry) should be tried
    again: the failure may pass (a timeout, a killed decoder, a read error),
    or its file changed since (a user replaced a broken download). A video
    that is still the same broken file is not retried, so that running a
    finished extraction again stays a no-op."""
    return bool(error.get("transient")) or ("file" in error and file_state(path) != error["file"])


def _retries(shards, indexes):
    """Shard name -> ids of its failed videos worth another try
    (``worth_retrying``), for the committed shards that have any."""
    retries = {}
    for shard in shards:
        index = indexes[shard.name]
        if index is not None and index["errors"]:
            paths = {video.video_id: video.path for video in shard.videos}
            again = [e["video_id"] for e in index["errors"] if worth_retrying(e, paths[e["video_id"]])]
            if again:
                retries[shard.name] = again
    return retries


def _read_existing(output_dir):
    try:
        return manifest_lib.read_manifest(output_dir)
    except files.UnreadableFile as e:
        raise ExtractionRefused(str(e)) from None


def _no_gpu():
    return False


def prepare(video_set, output_dir, config, split_source=None, overwrite=False, on_gpu=_no_gpu):
    """Phase 1: plans the shards and checks and marks the output folder.

    Must be called while holding the folder's lock (``files.exclusive``).

    Args:
      video_set: a ``dataset.VideoSet``.
      output_dir: the output folder (exists).
      config: an ``ExtractConfig``.
      split_source: how the splits were made (recorded; must match on resume).
      overwrite: delete the previous extraction's own files first.
      on_gpu: returns True if the runner's CNN runs on GPUs (asked only to
        settle ``--precision auto`` for a new output).

    Returns:
      A ``Plan`` (its ``config`` has the settled precision).

    Raises:
      ExtractionRefused: the folder holds an extraction with other settings
        or videos, files that are not ours where ours would go, or an
        unreadable manifest.
    """
    output_dir = str(output_dir)
    existing = _read_existing(output_dir)
    if overwrite and existing is not None:
        _clear_previous(output_dir, existing)
        existing = None
    config = _settle_precision(config, existing, on_gpu)
    settings = settings_of(config, video_set, split_source)
    if existing is not None and "model" in existing:
        settings["model"] = existing["model"]
    shards = plan_shards(video_set.splits, config.videos_per_shard)
    _refuse_to_overwrite_others(output_dir, existing, shards, config)
    indexes = _check_resumable(output_dir, existing, settings, shards)
    # A shard holding failures worth another try is extracted again, whole
    # (a shard is cheap, and every video stays in exactly one shard).
    retries = _retries(shards, indexes)
    for name in retries:
        indexes[name] = None
    plan = Plan(output_dir, video_set, config, settings, shards, indexes,
                was_complete=bool((existing or {}).get("complete")) and not retries,
                retried=sorted(video_id for ids in retries.values() for video_id in ids))
    if plan.pending:
        model_missing = False
        if config.precision == "int8":
            plan.model, settings["model"], model_missing = _quantized_model(output_dir, existing, config)
        if existing is None:
            planned = {}
            for shard in shards:
                planned.setdefault(shard.split, {"shards": []})["shards"].append(shard.name)
            manifest_lib.write_manifest(output_dir, {"complete": False, **settings, "splits": planned})
        elif existing.get("complete"):  # shards to redo: readers must not trust the folder meanwhile
            manifest_lib.write_manifest(output_dir, {**existing, "complete": False})
        # After the manifest that names it, so that a run killed in between
        # knows the file for its own.
        if model_missing:
            files.write_bytes_atomic(files.join(output_dir, MODEL_NAME), plan.model)
        for shard in plan.pending:
            writer.discard(output_dir, shard.name)
    return plan
