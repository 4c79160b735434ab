"""Which videos there are, their labels, and the train/test split.

A video's class is the name of the folder at depth ``class_depth`` below the
videos folder (1: ``Class/clip.avi``, the UCF-101 layout; 2:
``source/Class/clip.avi``); deeper folders inside a class folder are fine.
Class order never depends on the order in which the file system lists
folders: it is sorted by name, or taken from UCF-101's ``classInd.txt``.

Each real file is found once: symbolic links are resolved, a file reached
twice (through a link, say) is listed once, and a folder link that leads
back into the videos folder or above it is not followed (it would list
videos twice, or under another class); what was left out is reported.

Splits come from official lists when given (UCF-101's ``trainlistNN.txt``
and ``testlistNN.txt``, or HMDB-51's and JHMDB's ``<class>_test_splitN.txt``);
otherwise a reproducible split keeps every group (``records.groups``: a
UCF-101 ``gNN``, an HMDB source movie) on one side, across all classes,
because clips of one group share actors and background and would leak test
answers into training.
"""

import dataclasses
import os
import pathlib

from common.console import a_few, check_number
from extract.video import VIDEO_EXTENSIONS, is_video_file
from records import groups


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

    @property
    def group(self):
        """Clips of this group stay in one split (``records.groups``)."""
        return groups.group_of(self.video_id, self.label_name)


@dataclasses.dataclass
class VideoSet:
    """The videos to extract.

    Attributes:
      class_names: class names in label order.
      splits: split name -> list of videos.
      problems: ``(video_id, reason, split)`` for inputs that cannot be used
        (a listed video that is missing, a video outside any class folder);
        ``split`` is the split it was meant for, or None.
      unlisted: videos on disk that no split list names (ignored).
      notices: things the user should know that change no video's fate
        silently (links not followed, classes without test videos...), one
        sentence each.
    """

    class_names: list
    splits: dict
    problems: list
    unlisted: int = 0
    notices: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Listing:
    """What ``find_video_files`` found.

    Attributes:
      files: relative paths (``/``-separated, sorted) of the video files.
      folders: relative paths of every folder walked (links followed included).
      skipped: ``(relative path, reason)`` of links that were not followed or
        files reached a second time.
    """

    files: list
    folders: list
    skipped: list


def find_video_files(videos_dir):
    """Lists the video files below a folder, each real file once.

    Hidden files and folders are skipped. A link to a file counts as that
    file; a link to a folder is followed unless it leads back into
    ``videos_dir`` (its videos are listed already) or above it (a loop), or
    to a folder already listed. A file reached by two paths is listed under
    the one that is not a link, else under the first in sorted order.

    Returns:
      A ``Listing``.
    """
    root = os.path.realpath(videos_dir)
    by_real_path = {}  # real path -> (is a link, relative path)
    folders, skipped = [], []
    walked = {root}

    def inside(path, folder):
        return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)

    def walk(folder, prefix):
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = prefix + entry.name
            if entry.is_symlink():
                try:
                    target = os.path.realpath(entry.path, strict=True)
                except OSError:
                    skipped.append((relative, "a broken or looping symbolic link"))
                    continue
                if os.path.isdir(target):
                    if inside(target, root):
                        skipped.append((relative, "a link to a folder inside the videos folder (listed there)"))
                    elif inside(root, target):
                        skipped.append((relative, "a link to a folder above the videos folder (a loop)"))
                    elif target in walked:
                        skipped.append((relative, "a link to a folder listed already"))
                    else:
                        walked.add(target)
                        folders.append(relative)
                        walk(target, relative + "/")
                elif is_video_file(entry.name):
                    add(target, relative, is_link=True)
            elif entry.is_dir(follow_symlinks=False):
                folders.append(relative)
                walk(entry.path, relative + "/")
            elif entry.is_file(follow_symlinks=False) and is_video_file(entry.name):
                add(os.path.realpath(entry.path), relative, is_link=False)

    def add(real_path, relative, is_link):
        candidate = (is_link, relative)
        earlier = by_real_path.get(real_path)
        if earlier is None:
            by_real_path[real_path] = candidate
            return
        keep, drop = sorted([earlier, candidate])
        by_real_path[real_path] = keep
        skipped.append((drop[1], f"the same file as {keep[1]}"))

    walk(root, "")
    return Listing(sorted(relative for _, relative in by_real_path.values()), sorted(folders), sorted(skipped))


def check_test_fraction(test_fraction):
    check_number("test_fraction", test_fraction, minimum=0, below=1)


def check_class_depth(class_depth):
    check_number("class_depth", class_depth, minimum=1)


def split_by_groups(videos, test_fraction):
    """Splits videos into train and test, keeping groups whole across classes
    (``records.groups.held_out_groups``: about ``test_fraction`` of each
    class's groups, at least one where a class has two).

    Args:
      videos: list of ``Video``.
      test_fraction: share of each class's groups to hold out, in [0, 1).

    Returns:
      ``{"train": [...], "test": [...]}`` (``test`` only when non-empty).
    """
    check_test_fraction(test_fraction)
    test_groups = groups.held_out_groups([(v.group, v.label) for v in videos], test_fraction)
    splits = {
        "train": [v for v in videos if v.group not in test_groups],
        "test": [v for v in videos if v.group in test_groups],
    }
    return {name: split for name, split in splits.items() if split}


def read_class_index(path):
    """Class names in label order from a ``classInd.txt`` (``1 ApplyEyeMakeup`` lines)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: --splits_dir must hold UCF-101's classInd.txt (lines "
                         "'<index> <class>') beside trainlistNN.txt and testlistNN.txt")
    entries = []
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
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
    """Relative video paths named in a ``trainlistNN.txt`` / ``testlistNN.txt``,
    each once (UCF-101 paths are compared without case).

    Returns:
      ``(entries, repeated)``: the entries in file order, and those that the
      file lists more than once (exactly or in another case).
    """
    entries, seen, repeated = [], set(), []
    for line in pathlib.Path(path).read_text().splitlines():
        if not line.strip():
            continue
        entry = line.split()[0]
        if entry.lower() in seen:
            repeated.append(entry)
            continue
        seen.add(entry.lower())
        entries.append(entry)
    return entries, repeated


class SplitLists(dict):
    """Split name -> ``[(Class/clip entry, list file name)]``, plus ``notices``."""

    notices: list


def read_split_lists(splits_dir, split):
    """Reads the official split lists in ``splits_dir``: UCF-101's
    (``classInd.txt``, ``trainlistNN.txt``, ``testlistNN.txt``) or HMDB-51's
    and JHMDB's (``<class>_test_split<N>.txt``, lines ``<clip> <0|1|2>``:
    0 unused, 1 train, 2 test; the classes sorted by name).

    Returns:
      ``(class_names, SplitLists)``.

    Raises:
      ValueError: neither format is there, or a list is malformed (a class
        outside classInd.txt, a line that is not ``<clip> <0|1|2>``, a video
        in both lists).
    """
    hmdb_lists = sorted(splits_dir.glob(f"*_test_split{split}.txt")) if splits_dir.is_dir() else []
    if hmdb_lists and not (splits_dir / "classInd.txt").exists():
        return _read_hmdb_lists(hmdb_lists, split)
    if not splits_dir.is_dir():
        raise ValueError(f"--splits_dir {splits_dir} is not a folder")
    class_names = read_class_index(splits_dir / "classInd.txt")
    known = {name.lower() for name in class_names}
    lists = SplitLists()
    lists.notices = []
    listed_in = {}
    for split_name in ("train", "test"):
        list_file = splits_dir / f"{split_name}list{split:02d}.txt"
        if not list_file.exists():
            raise ValueError(f"split file {list_file} not found (is --split {split} right?)")
        entries, repeated = read_split_list(list_file)
        if repeated:
            lists.notices.append(f"{list_file.name} names {len(repeated)} videos more than once (each is used "
                                 f"once): {a_few(repeated, 5)}")
        in_both = [entry for entry in entries if entry.lower() in listed_in]
        if in_both:
            raise ValueError(f"{len(in_both)} videos are listed in both {listed_in[in_both[0].lower()]} and "
                             f"{list_file.name}: {a_few(in_both, 5)}. A video must be in one split only: fix "
                             "the lists.")
        for entry in entries:
            class_name = class_of(entry)
            if class_name is None or class_name.lower() not in known:
                raise ValueError(f"{list_file}: {entry!r} is not in a class of classInd.txt")
            listed_in[entry.lower()] = list_file.name
        lists[split_name] = [(entry, list_file.name) for entry in entries]
    return class_names, lists


_HMDB_SPLITS = {"1": "train", "2": "test"}


def _read_hmdb_lists(list_files, split):
    suffix = f"_test_split{split}.txt"
    class_names = sorted(path.name[:-len(suffix)] for path in list_files)
    lists = SplitLists(train=[], test=[])
    lists.notices = []
    for path, class_name in zip(list_files, class_names):
        for line_number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{line_number}: expected '<clip> <0|1|2>' (unused, train, test), got "
                                 f"{line!r}")
            if parts[1] in _HMDB_SPLITS:
                lists[_HMDB_SPLITS[parts[1]]].append((f"{class_name}/{parts[0]}", path.name))
    return class_names, lists


def class_of(video_id, class_depth=1):
    """The class folder of a video (its folder at depth ``class_depth``), or
    None if the video is not that deep."""
    parts = video_id.split("/")
    return parts[class_depth - 1] if len(parts) > class_depth else None


def _layout_notices(listing, class_depth, depth_given):
    """Class folders that hold no video, or hold videos only in subfolders
    (a sign that the classes sit one level deeper).

    Raises:
      ValueError: every class folder holds videos only in subfolders and the
        depth was not given: the classes almost surely sit one level deeper,
        and extracting the source folders as classes would waste the run.
    """
    class_folders = sorted(f for f in listing.folders if f.count("/") == class_depth - 1)
    holding = {"/".join(f.split("/")[:class_depth]) for f in listing.files if f.count("/") >= class_depth}
    direct = {f.rsplit("/", 1)[0] for f in listing.files if f.count("/") == class_depth}
    notices = []
    empty = [f for f in class_folders if f not in holding]
    if empty:
        notices.append(f"{len(empty)} class folders hold no video and are left out: {a_few(empty, 5)}")
    nested = sorted(holding - direct)
    if nested and nested == sorted(holding) and not depth_given:
        raise ValueError(f"all {len(holding)} class folders hold videos only in subfolders ({a_few(nested)}): "
                         f"the classes seem to sit one level deeper. Use --class_depth {class_depth + 1} if the "
                         f"subfolders are the classes (VIDEOS/source/Class/clip.avi), or --class_depth "
                         f"{class_depth} to take these folders as the classes.")
    if nested:
        notices.append(f"{len(nested)} of {len(holding)} class folders hold videos only in subfolders "
                       f"({a_few(nested)}): if the subfolders are the classes, use --class_depth {class_depth + 1}")
    return notices


def _test_split_notices(videos, splits, class_names, test_fraction):
    if test_fraction == 0:
        return []
    tested = {v.label for v in splits.get("test", [])}
    untested = sorted({v.label for v in videos} - tested)
    if not untested:
        return []
    names = [class_names[label] for label in untested]
    notice = (f"{len(untested)} classes have no test video, because all their videos form one group (clips "
              f"of one group stay in one split): {a_few(names, 5)}")
    if not tested:
        notice += ("; no test split is written, and train.py will train without held-out evaluation. Add "
                   "videos of other groups, or give --splits_dir")
    return [notice]


def _is_utf8(path):
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode's stand-ins for undecodable bytes
        return False
    return True


def _escaped(path):
    """``bad\\xffbyte.avi`` for a file named with the byte 0xff."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_videos(videos_dir, splits_dir=None, split=1, test_fraction=0.2, class_depth=None):
    """Finds the videos, labels them and assigns them to splits.

    Args:
      videos_dir: folder with one subfolder per class (at depth ``class_depth``).
      splits_dir: optional folder with UCF-101's ``classInd.txt``,
        ``trainlistNN.txt`` and ``testlistNN.txt``.
      split: which official split (1, 2 or 3) to use with ``splits_dir``.
      test_fraction: without ``splits_dir``, share of groups held out for test.
      class_depth: depth of the class folders below ``videos_dir``; None
        means 1, but refuses a layout whose every class folder holds videos
        only in subfolders (give 1 explicitly to accept it).

    Returns:
      A ``VideoSet``.

    Raises:
      ValueError: no videos, split files that are missing or malformed, a
        video listed in both the train and the test list, or a nested layout
        without ``class_depth``.
    """
    videos_dir = pathlib.Path(videos_dir).absolute()
    if not videos_dir.is_dir():
        raise ValueError(f"--videos {videos_dir} is not a folder")
    depth_given = class_depth is not None
    class_depth = class_depth or 1
    check_class_depth(class_depth)
    if splits_dir is not None and class_depth != 1:
        raise ValueError("--splits_dir (UCF-101's lists name Class/clip paths) needs --class_depth 1")
    listing = find_video_files(videos_dir)
    if not listing.files:
        raise ValueError(f"no video files ({' '.join(sorted(VIDEO_EXTENSIONS))}) found under {videos_dir}")
    notices = [f"{len(listing.skipped)} paths left out so that each video is listed once: "
               + a_few([f"{path} ({reason})" for path, reason in listing.skipped], 5)] if listing.skipped else []
    notices += _layout_notices(listing, class_depth, depth_given)
    where = "a class folder" if class_depth == 1 else f"a class folder at depth {class_depth}"
    # A name that is not UTF-8 cannot be a video id (records store UTF-8):
    # such a file is listed as failed, under its name with the bad bytes escaped.
    undecodable = [f for f in listing.files if not _is_utf8(f)]
    problems = [(_escaped(f), "its path is not valid UTF-8: rename it to extract it", None) for f in undecodable]
    class_folder = {f: class_of(f, class_depth) for f in listing.files if f not in undecodable}
    problems += [(f, f"not inside {where} (put each video in a subfolder named after its class)", None)
                 for f, name in class_folder.items() if name is None]
    classified = [f for f, name in class_folder.items() if name is not None]

    if splits_dir is None:
        class_names = sorted({class_folder[f] for f in classified})
        label_of = {name: i for i, name in enumerate(class_names)}
        videos = [Video(str(videos_dir / f), f, label_of[class_folder[f]], class_folder[f]) for f in classified]
        splits = split_by_groups(videos, test_fraction)
        notices += _test_split_notices(videos, splits, class_names, test_fraction)
        return VideoSet(class_names, splits, problems, notices=notices)

    class_names, lists = read_split_lists(pathlib.Path(splits_dir), split)
    label_of = {name.lower(): i for i, name in enumerate(class_names)}
    # UCF-101's lists and folders disagree on case for some names
    # (HandStandPushups vs HandstandPushups): match paths case-insensitively.
    on_disk = {f.lower(): f for f in classified}
    splits = {}
    listed_in = {}  # lower-case entry -> list file that names it
    for split_name, entries in lists.items():
        chosen = []
        for entry, list_name in entries:
            if entry.lower() in listed_in and listed_in[entry.lower()] != list_name:
                raise ValueError(f"{entry} is listed in both {listed_in[entry.lower()]} and {list_name}. A video "
                                 "must be in one split only: fix the lists.")
            listed_in[entry.lower()] = list_name
            found = on_disk.get(entry.lower())
            if found is None:
                problems.append((entry, f"listed in {list_name} but not found under --videos", split_name))
                continue
            label = label_of[class_of(entry).lower()]
            chosen.append(Video(str(videos_dir / found), found, label, class_names[label]))
        splits[split_name] = chosen
    notices += lists.notices
    unlisted = sum(1 for f in classified if f.lower() not in listed_in)
    return VideoSet(class_names, {k: v for k, v in splits.items() if v}, problems, unlisted, notices)
