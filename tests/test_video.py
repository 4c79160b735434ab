"""Decoding: frame counts, shapes, containers, odd inputs, broken files, real clips."""

import csv
import os
import subprocess

import numpy as np
import pytest

from conftest import make_video
from extract import video


@pytest.mark.parametrize("duration, expected", [(2.4, 12), (7.0, 35), (13.0, 50)])
def test_frame_count_is_duration_times_fps_capped_at_window(tmp_path, duration, expected):
    path = make_video(tmp_path / "clip.mp4", duration)
    frames = video.decode_frames(path, fps=5, seconds=10, size=224).frames
    assert frames.shape == (expected, 224, 224, 3)
    assert frames.dtype == np.uint8


@pytest.mark.parametrize("duration", [0.04, 0.1])
def test_a_clip_shorter_than_one_frame_period_keeps_its_frame(tmp_path, duration):
    path = make_video(tmp_path / "blink.mp4", duration)  # 1 or 2 frames at 25 fps
    assert len(video.decode_frames(path, fps=5, seconds=10, size=64).frames) == 1


def test_fps_and_seconds_flags_change_the_count(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 6)
    assert len(video.decode_frames(path, fps=2, seconds=10, size=64).frames) == 12
    assert len(video.decode_frames(path, fps=10, seconds=3, size=64).frames) == 30


def test_variable_frame_rate_input_is_resampled_to_constant_rate(tmp_path):
    # Timestamps stretched by a varying factor: the stream has no constant rate.
    path = make_video(tmp_path / "vfr.mkv", 4, rate=30,
                      output_args=["-vf", "setpts='PTS*(1+0.5*sin(N/5))'", "-fps_mode", "vfr"])
    frames = video.decode_frames(path, fps=5, seconds=10, size=64).frames
    # The stretched clip lasts a bit over 4 s; what counts is that every frame
    # ffmpeg delivers is on the 5 fps grid of the real duration, not 30 fps.
    assert 18 <= len(frames) <= 32


@pytest.mark.parametrize("suffix, codec_args", [
    (".avi", ["-c:v", "mpeg4"]), (".mp4", ["-c:v", "libx264"]), (".mkv", ["-c:v", "mpeg4"]),
    (".mov", ["-c:v", "mpeg4"]), (".webm", ["-c:v", "libvpx", "-b:v", "200k"]),
])
def test_containers(tmp_path, suffix, codec_args):
    path = make_video(tmp_path / f"clip{suffix}", 2, output_args=codec_args)
    assert video.decode_frames(path, fps=5, seconds=10, size=96).frames.shape == (10, 96, 96, 3)


@pytest.mark.parametrize("name", ["naïve café 動画.mp4", "-starts-with-dash.mp4", "a:b!c d'e.mp4", "%d %s.mp4"])
def test_odd_file_names(tmp_path, name):
    path = make_video(tmp_path / name, 1)
    assert len(video.decode_frames(path, fps=5, seconds=10, size=32).frames) == 5


def test_short_side_resize_and_centre_crop(tmp_path):
    # Left third red, middle green, right third blue, in a wide frame: the
    # centre crop of a short-side resize sees only green.
    path = make_video(tmp_path / "wide.mp4", 1, size=(600, 200), source="color=c=green",
                      output_args=["-vf", "drawbox=x=0:y=0:w=200:h=200:c=red:t=fill,"
                                          "drawbox=x=400:y=0:w=200:h=200:c=blue:t=fill"])
    frame = video.decode_frames(path, fps=5, seconds=10, size=100).frames[0].astype(int)
    red, green, blue = frame[..., 0].mean(), frame[..., 1].mean(), frame[..., 2].mean()
    assert green > 100 and red < 40 and blue < 40


def test_rotation_metadata_is_applied(tmp_path):
    # Top half white, bottom half black, stored with a 90 degree rotation flag:
    # displayed upright, the white half is on one side, not on top.
    plain = make_video(tmp_path / "plain.mp4", 1, size=(320, 240), source="color=c=black",
                       output_args=["-vf", "drawbox=x=0:y=0:w=320:h=120:c=white:t=fill"])
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([video.ffmpeg_binary(), "-loglevel", "error", "-y", "-display_rotation", "90", "-i", str(plain),
                    "-c", "copy", str(rotated)], check=True, timeout=120)
    upright = video.decode_frames(plain, fps=5, seconds=10, size=64).frames[0].mean(axis=2)
    turned = video.decode_frames(rotated, fps=5, seconds=10, size=64).frames[0].mean(axis=2)
    assert upright[:20].mean() > 200 and upright[-20:].mean() < 50
    columns = turned.mean(axis=0)
    assert abs(columns[:20].mean() - columns[-20:].mean()) > 150
    assert abs(turned[:20].mean() - turned[-20:].mean()) < 30


@pytest.mark.parametrize("sar, coloured_columns", [
    # 320x240 stored with a 2:1 sample aspect ratio displays as 640x240: its
    # centre square is the middle 120 stored columns, all green here, while a
    # crop that ignored the aspect ratio would take 240 columns and catch the
    # red and blue bands.
    ("2", 80),
    # Unknown aspect ratio (0:1) means square pixels: the centre 240 columns
    # (40 to 280) are green when the bands are 30 wide.
    ("0", 30),
])
def test_non_square_pixels_use_display_aspect(tmp_path, sar, coloured_columns):
    width = coloured_columns
    path = make_video(tmp_path / "anamorphic.mp4", 1, size=(320, 240), source="color=c=green",
                      output_args=["-vf", f"drawbox=x=0:y=0:w={width}:h=240:c=red:t=fill,"
                                          f"drawbox=x={320 - width}:y=0:w={width}:h=240:c=blue:t=fill,"
                                          f"setsar={sar}"])
    frames = video.decode_frames(path, fps=5, seconds=10, size=64).frames
    assert frames.shape == (5, 64, 64, 3)
    edges = frames[0, :, [0, -1]].astype(int)  # leftmost and rightmost columns
    assert (edges[..., 1] > 100).all() and (edges[..., 0] < 60).all() and (edges[..., 2] < 60).all()


def _write(path, data):
    path.write_bytes(data)
    return path


def test_broken_files_raise_specific_reasons(tmp_path):
    good = make_video(tmp_path / "good.mp4", 3)
    cases = {
        _write(tmp_path / "empty.mp4", b""): "empty file",
        _write(tmp_path / "random.avi", os.urandom(4096)): "not a readable video",
        _write(tmp_path / "text.mkv", b"this is not a video\n" * 50): "not a readable video",
        _write(tmp_path / "truncated.mp4", good.read_bytes()[:2000]): "truncated or corrupt",
    }
    for path, reason in cases.items():
        with pytest.raises(video.DecodeError, match=reason):
            video.decode_frames(path, fps=5, seconds=10, size=64)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "audio.mp4"
    subprocess.run([video.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1", str(path)],
                   check=True, timeout=120)
    with pytest.raises(video.DecodeError, match="no video stream"):
        video.decode_frames(path, fps=5, seconds=10, size=64)


def _manifest_rows(shared_videos):
    with open(shared_videos / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_real_clips_frame_counts(shared_videos):
    rows = _manifest_rows(shared_videos)
    assert len(rows) >= 30
    for row in rows:
        frames = video.decode_frames(shared_videos / row["local_path"], fps=5, seconds=10, size=224).frames
        expected = min(float(row["duration_s"]), 10.0) * 5
        assert abs(len(frames) - expected) <= 1, (row["local_path"], len(frames), expected)
        assert frames.shape[1:] == (224, 224, 3)
