"""Which videos there are, their labels, and the train/test split.

A video's class is the first-level subfolder of the videos folder it sits
in (deeper folders are allowed). Class order never depends on the order in
which the file system lists folders: it is sorted by name, or taken from
UCF-101's ``classInd.txt``.

Splits come from UCF-101's official lists (``trainlistNN.txt`` and
``testlistNN.txt``) when given; otherwise a reproducible split keeps every
UCF-style group (``v_<Class>_gNN_cMM``: clips cut from the same long video)
on one side, because clips of one group share actors and background and
would leak test answers into training.
"""

import dataclasses
import hashlib
import os
import pathlib
import re

from extract.video import VIDEO_EXTENSIONS, is_video_file

_UCF_NAME = re.compile(r"^v_(?P<action>.+)_g(?P<group>\d+)_c(?P<clip>\d+)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Video:
    """One input video.

    Attributes:
      path: absolute path of the file.
      video_id: path relative to the videos folder, with ``/`` separators.
      label: class index.
      label_name: class name.
    """

    path: str
    video_id: str
    label: int
    label_name: str


@dataclasses.dataclass
class VideoSet:
    """The videos to extract.

    Attributes:
      class_names: class names in label order.
      splits: split name -> list of videos.
      problems: ``(video_id, reason)`` for inputs that cannot be used (a
        listed video that is missing, a video outside any class folder).
      unlisted: videos on disk that no split list names (ignored).
    """

    class_names: list
    splits: dict
    problems: list
    unlisted: int = 0


def find_video_files(videos_dir):
    """Relative paths (``/``-separated, sorted) of the video files below a folder.

    Hidden files and folders are skipped; symbolic links are followed.
    """
    found = []
    for folder, subfolders, files in os.walk(videos_dir, followlinks=True):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and is_video_file(name):
                found.append(pathlib.Path(folder, name).relative_to(videos_dir).as_posix())
    return sorted(found)


def group_key(video_id):
    """Clips sharing this key must stay in the same split.

    ``Class/v_Class_g08_c03.avi`` -> ``class/g08`` (UCF-101 naming); any
    other file is a group of its own.
    """
    match = _UCF_NAME.match(pathlib.PurePosixPath(video_id).stem)
    if match:
        return f"{match['action'].lower()}/g{match['group']}"
    return video_id


def _stable_hash(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def split_by_groups(videos, test_fraction):
    """Splits videos into train and test, keeping groups whole.

    Within each class, groups are ordered by a hash of their key and the first
    ``round(test_fraction * groups)`` go to test (at least one, if the class
    has two groups or more and ``test_fraction > 0``; never all of them). The
    result depends only on the file names, not on listing order or on other
    classes.

    Args:
      videos: list of ``Video``.
      test_fraction: share of each class's groups to hold out, in [0, 1).

    Returns:
      ``{"train": [...], "test": [...]}`` (``test`` only when non-empty).
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    groups_by_class = {}
    for video in videos:
        groups_by_class.setdefault(video.label, set()).add(group_key(video.video_id))
    test_groups = set()
    for groups in groups_by_class.values():
        ordered = sorted(groups, key=_stable_hash)
        count = round(test_fraction * len(ordered))
        if test_fraction > 0 and len(ordered) >= 2:
            count = min(max(count, 1), len(ordered) - 1)
        test_groups.update(ordered[:count])
    splits = {
        "train": [v for v in videos if group_key(v.video_id) not in test_groups],
        "test": [v for v in videos if group_key(v.video_id) in test_groups],
    }
    return {name: split for name, split in splits.items() if split}


def read_class_index(path):
    """Class names in label order from a ``classInd.txt`` (``1 ApplyEyeMakeup`` lines)."""
    entries = []
    for line_number, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{line_number}: expected '<index> <class>', got {line!r}")
        entries.append((int(parts[0]), parts[1]))
    indices = sorted(index for index, _ in entries)
    if indices != list(range(1, len(entries) + 1)):
        raise ValueError(f"{path}: class indices must be 1..{len(entries)} without gaps")
    return [name for _, name in sorted(entries)]


def read_split_list(path):
    """Relative video paths named in a ``trainlistNN.txt`` / ``testlistNN.txt``."""
    return [line.split()[0] for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def _first_folder(video_id):
    parts = video_id.split("/")
    return parts[0] if len(parts) > 1 else None


def load_videos(videos_dir, splits_dir=None, split=1, test_fraction=0.2):
    """Finds the videos, labels them and assigns them to splits.

    Args:
      videos_dir: folder with one subfolder per class.
      splits_dir: optional folder with UCF-101's ``classInd.txt``,
        ``trainlistNN.txt`` and ``testlistNN.txt``.
      split: which official split (1, 2 or 3) to use with ``splits_dir``.
      test_fraction: without ``splits_dir``, share of groups held out for test.

    Returns:
      A ``VideoSet``.

    Raises:
      ValueError: no videos, or split files that are missing or malformed.
    """
    videos_dir = pathlib.Path(videos_dir).absolute()
    if not videos_dir.is_dir():
        raise ValueError(f"--videos {videos_dir} is not a folder")
    files = find_video_files(videos_dir)
    if not files:
        raise ValueError(f"no video files ({' '.join(sorted(VIDEO_EXTENSIONS))}) found under {videos_dir}")
    problems = [(f, "not inside a class folder (put each video in a subfolder named after its class)")
                for f in files if _first_folder(f) is None]
    classified = [f for f in files if _first_folder(f) is not None]

    if splits_dir is None:
        class_names = sorted({_first_folder(f) for f in classified})
        label_of = {name: i for i, name in enumerate(class_names)}
        videos = [Video(str(videos_dir / f), f, label_of[_first_folder(f)], _first_folder(f)) for f in classified]
        return VideoSet(class_names, split_by_groups(videos, test_fraction), problems)

    splits_dir = pathlib.Path(splits_dir)
    class_names = read_class_index(splits_dir / "classInd.txt")
    label_of = {name.lower(): i for i, name in enumerate(class_names)}
    # UCF-101's lists and folders disagree on case for some names
    # (HandStandPushups vs HandstandPushups): match paths case-insensitively.
    on_disk = {f.lower(): f for f in classified}
    splits = {}
    listed = set()
    for split_name in ("train", "test"):
        list_file = splits_dir / f"{split_name}list{split:02d}.txt"
        if not list_file.exists():
            raise ValueError(f"split file {list_file} not found (is --split {split} right?)")
        chosen = []
        for entry in read_split_list(list_file):
            class_name = _first_folder(entry)
            if class_name is None or class_name.lower() not in label_of:
                raise ValueError(f"{list_file}: {entry!r} is not in a class of classInd.txt")
            listed.add(entry.lower())
            found = on_disk.get(entry.lower())
            if found is None:
                problems.append((entry, f"listed in {list_file.name} but not found under --videos"))
                continue
            label = label_of[class_name.lower()]
            chosen.append(Video(str(videos_dir / found), found, label, class_names[label]))
        splits[split_name] = chosen
    unlisted = sum(1 for f in classified if f.lower() not in listed)
    return VideoSet(class_names, {k: v for k, v in splits.items() if v}, problems, unlisted)

