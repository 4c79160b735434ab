"""Phase 3 of an extraction, shared by every runner: the lists of failed and
damaged videos, the final manifest, and the run's summary.

A video that cannot be used is counted once, in one place: ``failures``
gathers the videos that failed to decode (from the committed shards'
indexes) and the inputs that could not be used at all (a listed file that is
missing, a video outside any class folder). ``errors.tsv`` lists them all;
the manifest's per-split ``failed`` counts those meant for that split and
``unusable_inputs`` those meant for none; the summary's ``failed`` is their
total.
"""

import dataclasses
import math
import platform
import subprocess
import typing

from common.console import a_few
from extract import backbones, dataset
from extract.plan import ERRORS_NAME, WARNINGS_NAME
from extract.video import ffmpeg_binary
from records import files
from records import manifest as manifest_lib


@dataclasses.dataclass
class Summary:
    """What a run did (``written``/``failed`` count the whole output folder).

    ``extract_seconds`` is the time spent decoding and running the CNN;
    ``wall_seconds`` also counts start-up (listing, loading the model; the
    command sets it to its own wall time, Python's start-up included).
    """

    output_dir: str
    written: int
    failed: int
    warnings: int
    frames_extracted: int
    videos_extracted: int
    extract_seconds: float
    wall_seconds: float
    shards_done_before: int
    shards_written: int
    weights: str = "imagenet"
    runner: str = "local"
    retried: int = 0
    retried_still_failing: int = 0
    short_clips: str = ""  # short_clip_advice, if it has any
    untrained_classes: tuple = ()  # classes with held-out videos and no training video
    ungrouped: str = ""  # dataset.ungrouped_notice, for a split made by groups


    def __str__(self):
        lines = [
            f"output: {self.output_dir}",
            f"videos: {self.written} written, {self.failed} failed"
            + (f" (see {files.join(self.output_dir, ERRORS_NAME)})" if self.failed else ""),
        ]
        if self.shards_written:
            rate = self.frames_extracted / self.extract_seconds if self.extract_seconds else 0.0
            lines += [
                f"this run ({self.runner}): {self.videos_extracted} videos, {self.frames_extracted} frames; "
                f"{self.shards_written} shards written, {self.shards_done_before} already done",
                f"speed: {rate:.1f} frames/s decoding + CNN ({self.extract_seconds:.1f} s); "
                f"{self.wall_seconds:.1f} s wall time including start-up",
            ]
        else:
            lines.append(f"this run: nothing to do, all {self.shards_done_before} shards were done "
                         f"({self.wall_seconds:.1f} s wall time)")
        if self.retried:
            lines.append(f"retried {self.retried} videos that had failed (a timeout, a read error, or a file that "
                         f"changed since): {self.retried - self.retried_still_failing} now written, "
                         f"{self.retried_still_failing} still fail")
        if self.warnings:
            lines.append(f"{self.warnings} videos decoded with errors and were kept "
                         f"(see {files.join(self.output_dir, WARNINGS_NAME)})")
        if self.short_clips:
            lines.append(self.short_clips)
        if self.ungrouped:
            lines.append(self.ungrouped)
        if self.untrained_classes:
            lines.append(f"{len(self.untrained_classes)} classes have held-out videos but no training video "
                         f"({a_few(self.untrained_classes)}): a model trained on these features cannot classify "
                         "them right; add videos of them (or their failed videos: see errors.tsv)")
        if self.weights == "none":
            lines.append("*** these features come from RANDOM weights (--weights none): they are meaningless; "
                         "use them for smoke tests only ***")
        return "\n".join(lines)


class Failure(typing.NamedTuple):
    video_id: str
    reason: str
    split: typing.Optional[str]  # the split it was meant for, None if none
    shard: str = ""  # the shard it belongs to ("" for an input that is in none)


# Fewer real frames than this in most videos leaves a model little to read
# (JHMDB's 0.5-1.3 s clips give 3 to 7 at the default 5 fps).
FEW_FRAMES = 10
# The rate short clips are best read at, measured on JHMDB (BENCHMARKS.md
# sections 10 and 11): MoViNet's best of 5, 10 and 30 frames/s; for
# EfficientNet-Lite0 as accurate as every frame (30), with 3x fewer frames.
SHORT_CLIP_FPS = 10


def short_clip_advice(num_frames, fps, seconds):
    """What to pass when the videos are short for the settings, or "".

    Args:
      num_frames: the real frames of each video extracted.
      fps, seconds: the extraction's settings.

    Returns:
      One warning (few frames in most videos: ``--fps 10``; all videos far
      shorter than ``--seconds``: a shorter window, which pads less), naming
      the flags to pass and where to read what they buy; "" when neither
      holds.
    """
    if not num_frames:
        return ""
    ordered = sorted(num_frames)
    median, longest = ordered[len(ordered) // 2], ordered[-1]
    advice = []
    if median < FEW_FRAMES and fps < SHORT_CLIP_FPS:
        advice.append(f"--fps {SHORT_CLIP_FPS}")
    longest_seconds = longest / fps
    if longest_seconds < seconds / 2:
        advice.append(f"--seconds {math.ceil(longest_seconds * 2) / 2:g}")
    if not advice:
        return ""
    return (f"short clips: the videos have {ordered[0]} to {longest} frames (median {median}) at --fps {fps:g}, "
            f"padded to {round(seconds * fps)}. For clips this short, extract again into a new --output_dir with "
            f"{' '.join(advice)} (README: \"Short clips\", says what it buys).")


def untrained_classes(plan):
    """Names of the classes whose videos were all held out (or failed in training)."""
    labels = {}
    for shard in plan.shards:
        labels.setdefault(shard.split, set()).update(v["label"] for v in plan.indexes[shard.name]["videos"])
    held_out = set().union(*(found for split, found in labels.items() if split != "train"))
    return tuple(plan.video_set.class_names[label] for label in sorted(held_out - labels.get("train", set())))


def failures(plan):
    """Every video of ``plan`` that could not be used (all shards committed)."""
    found = [Failure(*problem) for problem in plan.video_set.problems]
    for shard in plan.shards:
        found += [Failure(e["video_id"], e["reason"], shard.split, shard.name)
                  for e in plan.indexes[shard.name]["errors"]]
    return sorted(found)


def package_versions(backbone):
    """Versions of what made the features (recorded in the manifest)."""
    weights_package = backbones.get_spec(backbone).weights_package
    versions = {"python": platform.python_version(),
                **manifest_lib.installed_versions(("tensorflow", "keras", "ai-edge-litert", "numpy", "ffmpeg-python",
                                                   *filter(None, [weights_package]), "ray"))}
    first_line = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    versions["ffmpeg"] = first_line
    return versions


def final_manifest(plan, failed, runner):
    """The manifest of a finished extraction."""
    splits = {}

    def entry(split):
        return splits.setdefault(split, {"videos": 0, "failed": 0, "frames": 0, "shards": []})

    for shard in plan.shards:
        index = plan.indexes[shard.name]
        entry(shard.split)["videos"] += len(index["videos"])
        entry(shard.split)["frames"] += sum(v["num_frames"] for v in index["videos"])
        entry(shard.split)["shards"].append(shard.name)
    for failure in failed:
        if failure.split is not None:
            entry(failure.split)["failed"] += 1
    return {
        "complete": True,
        **plan.settings,
        "feature_encoding": ("FloatList of feature_dim values per frame" if plan.settings["dtype"] == "float32"
                             else "one bytes value per frame: feature_dim little-endian float16"),
        "splits": splits,
        "unusable_inputs": sum(1 for failure in failed if failure.split is None),
        "runner": runner,
        "versions": package_versions(plan.settings["backbone"]),
    }


def finalize(plan, runner, videos_extracted, frames_extracted, extract_seconds, wall_seconds):
    """Phase 3: writes ``errors.tsv``, ``warnings.tsv`` and the final manifest
    (unless the folder already held this finished extraction).

    Args:
      plan: the ``plan.Plan``, with every shard committed (its index read).
      runner: name of the runner, recorded in the manifest.
      videos_extracted, frames_extracted: this run's work.
      extract_seconds: time spent decoding and running the CNN.
      wall_seconds: the run's time so far, start-up included.

    Returns:
      A ``Summary``.
    """
    failed = failures(plan)
    warnings = sorted((v["video_id"], v["warning"]) for shard in plan.shards
                      for v in plan.indexes[shard.name]["videos"] if "warning" in v)
    shards_written = len(plan.pending)
    if shards_written or not plan.was_complete:
        files.write_tsv(files.join(plan.output_dir, ERRORS_NAME), ("video", "reason", "shard"),
                        [(f.video_id, f.reason, f.shard) for f in failed])
        files.write_tsv(files.join(plan.output_dir, WARNINGS_NAME), ("video", "warning"), warnings)
        manifest_lib.write_manifest(plan.output_dir, final_manifest(plan, failed, runner))
    return Summary(
        output_dir=plan.output_dir,
        written=sum(len(plan.indexes[s.name]["videos"]) for s in plan.shards),
        failed=len(failed),
        warnings=len(warnings),
        frames_extracted=frames_extracted,
        videos_extracted=videos_extracted,
        extract_seconds=extract_seconds,
        wall_seconds=wall_seconds,
        shards_done_before=len(plan.shards) - shards_written,
        shards_written=shards_written,
        weights=plan.settings["weights"],
        runner=runner,
        retried=len(plan.retried),
        retried_still_failing=len(set(plan.retried) & {f.video_id for f in failed}),
        short_clips=short_clip_advice([v["num_frames"] for shard in plan.shards
                                       for v in plan.indexes[shard.name]["videos"]],
                                      plan.settings["fps"], plan.settings["seconds"]),
        untrained_classes=untrained_classes(plan),
        ungrouped=ungrouped(plan),
    )


def ungrouped(plan):
    """``dataset.ungrouped_notice`` of a split made here by groups (not by
    split lists), else ""."""
    if not (plan.settings.get("split_source") or {}).get("test_fraction"):
        return ""
    return dataset.ungrouped_notice([video for shard in plan.shards for video in shard.videos])
