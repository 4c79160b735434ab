"""A small labelled video set made by ffmpeg's lavfi sources, for a first run
without UCF-101.

The classes come in pairs that are each other played backwards (a colour
fading red to blue or blue to red, a disc growing or shrinking), so the
average of a video's frame features cannot tell a pair apart but a model that
sees the order can. Durations (2-12 s), frame sizes and containers vary, so
padding, the 10 s cut-off and several demuxers are exercised. File names
follow UCF-101 (``v_<Class>_gNN_cMM``), so groups are kept on one side of the
train/test split.
"""

import pathlib
import random
import subprocess

import ffmpeg

from extract.video import ffmpeg_binary

SOURCE_FPS = 12
_SIZES = ((320, 240), (256, 144), (176, 144), (240, 320))
_CONTAINERS = (".avi", ".mp4", ".mkv")


def _fade(start, end):
    """geq expressions (r, g, b) for a uniform colour moving from start to end."""
    return {channel: f"{a}+({b}-{a})*T/DURATION" for channel, a, b in zip("rgb", start, end)}


def _disc(grow):
    radius = "(0.05+0.4*T/DURATION)" if grow else "(0.45-0.4*T/DURATION)"
    inside = f"lt(hypot(X-W/2,Y-H/2),{radius}*min(W,H))"
    return {"r": f"if({inside},240,20)", "g": f"if({inside},200,20)", "b": f"if({inside},40,60)"}


DEMO_CLASSES = {
    "FadeRedToBlue": _fade((220, 30, 30), (30, 30, 220)),
    "FadeBlueToRed": _fade((30, 30, 220), (220, 30, 30)),
    "DiscGrowing": _disc(grow=True),
    "DiscShrinking": _disc(grow=False),
}


def make_demo_video(path, class_name, duration, size, seed):
    """Writes one synthetic video of ``class_name`` (a key of ``DEMO_CLASSES``)."""
    width, height = size
    expressions = {k: v.replace("DURATION", f"{duration:.3f}") for k, v in DEMO_CLASSES[class_name].items()}
    source = ffmpeg.input(f"color=c=black:s={width}x{height}:r={SOURCE_FPS}:d={duration:.3f}", f="lavfi")
    stream = (
        source.filter("geq", **expressions)
        # Grain that changes every frame, so no two videos are pixel-identical.
        .filter("noise", alls=12, allf="t", all_seed=seed)
        .output(str(path), vcodec="mpeg4", pix_fmt="yuv420p", **{"q:v": 4})
    )
    command = stream.compile(cmd=[ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y"])
    subprocess.run(command, check=True)


def make_demo_videos(folder, groups_per_class=3, clips_per_group=2, seed=0):
    """Writes the demo set: one subfolder per class, UCF-style file names.

    Args:
      folder: where to write (created if needed).
      groups_per_class: groups (``gNN``) per class.
      clips_per_group: clips (``cMM``) per group.
      seed: varies durations, sizes, containers and grain.

    Returns:
      Paths of the videos written.
    """
    rng = random.Random(seed)
    paths = []
    for class_name in DEMO_CLASSES:
        (pathlib.Path(folder) / class_name).mkdir(parents=True, exist_ok=True)
        for group in range(1, groups_per_class + 1):
            for clip in range(1, clips_per_group + 1):
                extension = rng.choice(_CONTAINERS)
                path = pathlib.Path(folder) / class_name / f"v_{class_name}_g{group:02d}_c{clip:02d}{extension}"
                make_demo_video(path, class_name, duration=rng.uniform(2.0, 12.0), size=rng.choice(_SIZES),
                                seed=rng.randrange(1 << 16))
                paths.append(path)
    return paths
