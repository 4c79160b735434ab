"""Decoding videos into fixed-rate, fixed-size RGB frames with ffmpeg.

One ffmpeg process per video writes raw rgb24 frames to a pipe; nothing
touches the disk. ffmpeg does all the work in one pass:

- ``-t SECONDS`` on the input stops reading after the first seconds;
- ``fps`` resamples to a constant frame rate (variable-rate input included),
  so the frame count is what ffmpeg delivers, about min(duration, seconds) x
  fps, never a container's claimed count;
- ``scale`` resizes so the short side (in display proportions, using the
  sample aspect ratio) equals the output size, ``crop`` keeps the centre;
- rotation metadata is applied by ffmpeg's default autorotation.

Each ffmpeg decodes on one thread and filters on one thread: the extractor
runs one ffmpeg per core, so threads inside one would only add switching
(one filter thread instead of one per core: the same frames for 0-5 % less
CPU; BENCHMARKS.md, section 9, says where the rest of the time goes).
"""

import functools
import os
import pathlib
import re
import shutil
import subprocess
import threading
import typing

import ffmpeg
import numpy as np

VIDEO_EXTENSIONS = frozenset({
    ".avi", ".mp4", ".m4v", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv",
})


class DecodeError(Exception):
    """A video that yields no frames; the message says why, in a few words.

    Attributes:
      transient: the failure may not happen again (ffmpeg ran out of time or
        was killed, the file could not be read): the same command retries it.
    """

    def __init__(self, reason, transient=False):
        super().__init__(reason)
        self.transient = transient


class Decoded(typing.NamedTuple):
    """Frames of one video, and what ffmpeg complained about while decoding
    them (corrupt packets, a truncated file), or None if nothing."""

    frames: np.ndarray
    warning: typing.Optional[str]


@functools.lru_cache(maxsize=None)
def ffmpeg_binary():
    """The ffmpeg on PATH if there is one, else the one in the imageio-ffmpeg wheel."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_command(path, fps, seconds, size, max_frames, threads=1, resample=True, filter_threads=1):
    """Builds the ffmpeg command line that decodes ``path`` to raw rgb24 frames.

    Args:
      path: the video file.
      fps: output frame rate.
      seconds: how much of the start of the video to read.
      size: output frames are ``size`` x ``size``.
      max_frames: stop after this many frames.
      threads: decoder threads (1 suits a pool of parallel decoders).
      resample: apply the ``fps`` filter (without it, frames come at the
        video's own rate).
      filter_threads: threads of the filter graph (None: ffmpeg's default,
        one per core; the benchmark compares).

    Returns:
      The argument list, starting with the ffmpeg binary.
    """
    # "file:" stops ffmpeg from reading a protocol into names like "a:b.mp4".
    source = "file:" + str(pathlib.Path(path).absolute())
    display_width = "iw*sar"
    landscape = f"gte({display_width},ih)"
    stream = ffmpeg.input(source, t=seconds, threads=threads).video
    if resample:
        stream = stream.filter("fps", fps=fps)
    stream = (
        stream.filter(
            "scale",
            w=f"if({landscape},ceil({size}*{display_width}/ih),{size})",
            h=f"if({landscape},{size},ceil({size}*ih/({display_width})))",
            flags="bilinear",
        )
        .filter("crop", size, size)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", vframes=max_frames)
    )
    threading = ["-filter_complex_threads", str(filter_threads)] if filter_threads is not None else []
    return stream.compile(cmd=[ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *threading])


def _stderr_text(stderr):
    """ffmpeg's messages on one line."""
    return " | ".join(line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip())


def _failure_reason(stderr):
    text = _stderr_text(stderr)
    if "matches no streams" in text or "does not contain any stream" in text:
        return "no video stream"
    if "moov atom not found" in text:
        return "truncated or corrupt file (ffmpeg: moov atom not found)"
    if "Invalid data found when processing input" in text:
        return "not a readable video (ffmpeg: Invalid data found when processing input)"
    return "ffmpeg failed: " + _shorten(text)


def _shorten(text, limit=300):
    return text if len(text) <= limit else text[:limit] + "..."


DEFAULT_TIMEOUT_SECONDS = 600


def decode_frames(path, fps, seconds, size, timeout=DEFAULT_TIMEOUT_SECONDS):
    """Decodes the first ``seconds`` of a video at ``fps`` into square frames.

    Args:
      path: the video file.
      fps: frames per second to sample.
      seconds: length of the window read from the start of the video.
      size: side of the square output frames (the CNN's input size).
      timeout: seconds after which a stuck ffmpeg is killed.

    Returns:
      ``Decoded``: frames as a uint8 array ``[num_frames, size, size, 3]``
      (RGB), ``1 <= num_frames <= round(seconds * fps)``, and a warning when
      ffmpeg reported errors but still delivered frames (they are real frames
      of the video, so they are kept).

    Raises:
      DecodeError: the file is empty, has no video stream, cannot be decoded,
        or has no frame in the window.
    """
    if os.path.getsize(path) == 0:
        raise DecodeError("empty file (0 bytes)")
    result = _run(ffmpeg_command(path, fps, seconds, size, max_frames_for(fps, seconds)), timeout)
    if not result.stdout:
        # A clip shorter than half a frame period at ``fps`` (a single frame,
        # say) gets no frame from the fps filter: keep its first frame rather
        # than drop the video, unless it is a picture (a PNG renamed .avi).
        still = _still_image_format(path, timeout)
        if still:
            raise DecodeError(f"a still image ({still}), not a video")
        result = _run(ffmpeg_command(path, fps, seconds, size, 1, resample=False), timeout)
    frame_bytes = size * size * 3
    if not result.stdout:
        raise DecodeError(f"no frame decoded in the first {seconds:g} s")
    if len(result.stdout) % frame_bytes:
        raise DecodeError("ffmpeg returned a partial frame")
    frames = np.frombuffer(result.stdout, np.uint8).reshape(-1, size, size, 3)
    complaints = _stderr_text(result.stderr)
    return Decoded(frames, "decoded with errors: " + _shorten(complaints) if complaints else None)


def _still_image_format(path, timeout):
    """The name of ffmpeg's demuxer if it reads ``path`` as a still image
    (``png_pipe``, ``jpeg_pipe``, ``image2``...), else None."""
    command = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-i", "file:" + str(pathlib.Path(path).absolute())]
    try:  # no output file: ffmpeg describes the input, then stops with an error
        stderr = subprocess.run(command, capture_output=True, timeout=timeout, check=False).stderr
    except subprocess.TimeoutExpired:
        return None
    match = re.search(r"^Input #0, ([^,\s]+)", stderr.decode("utf-8", "replace"), re.MULTILINE)
    if match and (match.group(1).endswith("_pipe") or match.group(1) == "image2"):
        return match.group(1)
    return None


# The ffmpeg processes this process is running, so that an interrupted run
# can end them at once (``stop_decoders``) instead of waiting for them.
_decoders = set()
_decoders_lock = threading.Lock()


def _run(command, timeout):
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with _decoders_lock:
        _decoders.add(process)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise DecodeError(f"ffmpeg did not finish within {timeout:g} s (--decode_timeout)", transient=True) from None
    finally:
        with _decoders_lock:
            _decoders.discard(process)
    if process.returncode < 0:
        raise DecodeError(f"ffmpeg was killed (signal {-process.returncode})", transient=True)
    if process.returncode != 0:
        raise DecodeError(_failure_reason(stderr))
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def stop_decoders():
    """Kills the ffmpeg processes this process is running (an interrupted
    run); their decodes fail, and nothing waits for them."""
    with _decoders_lock:
        for process in _decoders:
            process.kill()


def file_state(path):
    """What tells whether a file changed since: its size and modification
    time, or None if it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def max_frames_for(fps, seconds):
    """Number of frames every video is padded to: ``seconds x fps``."""
    return int(round(fps * seconds))


def is_video_file(path):
    return pathlib.Path(path).suffix.lower() in VIDEO_EXTENSIONS
