"""The user cache folder: converted weights and LiteRT models (made once per
machine), and the local lock files of object-storage outputs."""

import os
import pathlib


def cache_dir():
    """The user cache folder for converted weights (``$VIDEO_FEATURES_CACHE``,
    else ``$XDG_CACHE_HOME/video_features``, else ``~/.cache/video_features``)."""
    if os.environ.get("VIDEO_FEATURES_CACHE"):
        return pathlib.Path(os.environ["VIDEO_FEATURES_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "video_features"
