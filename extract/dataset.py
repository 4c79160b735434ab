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


class SplitLists(dict):
    """Split name -> ``[(Class/clip entry, list file name)]``, each video
    once and in one split only, plus ``notices``."""

    notices: list


def read_split_lists(splits_dir, split):
    """Reads the official split lists in ``splits_dir``: UCF-101's
    (``classInd.txt``, ``trainlistNN.txt``, ``testlistNN.txt``) or HMDB-51's
    and JHMDB's (``<class>_test_split<N>.txt``, lines ``<clip> <0|1|2>``:
    0 unused, 1 train, 2 test; the classes sorted by name, each list the
    class its file name names).

    Returns:
      ``(class_names, SplitLists)``.

    Raises:
      ValueError: neither format is there, or a list is malformed (a class
        outside classInd.txt, a line that is not ``<clip> <0|1|2>``, a video
        in both splits, class names that differ only in case).
    """
    hmdb_lists = sorted(splits_dir.glob(f"*_test_split{split}.txt")) if splits_dir.is_dir() else []
    if hmdb_lists and not (splits_dir / "classInd.txt").exists():
        class_names, entries = _read_hmdb_lists(hmdb_lists, split)
    else:
        class_names, entries = _read_ucf_lists(splits_dir, split)
    _refuse_case_clashes(class_names, "classInd.txt" if not hmdb_lists else "the split lists' class names")
    return class_names, _each_video_once(entries)


def _read_ucf_lists(splits_dir, split):
    if not splits_dir.is_dir():
        raise ValueError(f"--splits_dir {splits_dir} is not a folder")
    class_names = read_class_index(splits_dir / "classInd.txt")
    known = {name.lower() for name in class_names}
    entries = {}
    for split_name in ("train", "test"):
        list_file = splits_dir / f"{split_name}list{split:02d}.txt"
        if not list_file.exists():
            raise ValueError(f"split file {list_file} not found (is --split {split} right?)")
        entries[split_name] = []
        for line in list_file.read_text().splitlines():
            if not line.strip():
                continue
            entry = line.split()[0]
            class_name = class_of(entry)
            if class_name is None or class_name.lower() not in known:
                raise ValueError(f"{list_file}: {entry!r} is not in a class of classInd.txt")
            entries[split_name].append((entry, list_file.name))
    return class_names, entries


_HMDB_SPLITS = {"1": "train", "2": "test"}


def _read_hmdb_lists(list_files, split):
    suffix = f"_test_split{split}.txt"
    entries = {"train": [], "test": []}
    for path in list_files:
        # The class is the whole name before the suffix: kick_ball_test_split1.txt
        # is kick_ball's list, whatever sorts between it and kick's.
        class_name = path.name[:-len(suffix)]
        for line_number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{line_number}: expected '<clip> <0|1|2>' (unused, train, test), got "
                                 f"{line!r}")
            if parts[1] in _HMDB_SPLITS:
                entries[_HMDB_SPLITS[parts[1]]].append((f"{class_name}/{parts[0]}", path.name))
    return sorted(path.name[:-len(suffix)] for path in list_files), entries


def _refuse_case_clashes(class_names, source):
    """Paths in split lists are matched without case (UCF-101's lists and
    folders disagree on case), so two classes must not differ only in case."""
    by_case = {}
    for name in class_names:
        by_case.setdefault(name.lower(), []).append(name)
    clashes = [" and ".join(names) for names in by_case.values() if len(names) > 1]
    if clashes:
        raise ValueError(f"{source} names classes that differ only in case ({'; '.join(clashes)}); split lists are "
                         "matched without case, so their videos cannot be told apart: rename one of each pair "
                         "(the class folder and its entries)")


def _each_video_once(entries):
    """The lists with each video once (a repeat in one split is used once,
    and said), refusing, by name, videos in both splits (paths compared
    without case).

    Args:
      entries: split name -> ``[(entry, list file name)]`` in list order.
    """
    lists = SplitLists()
    lists.notices = []
    first_listed = {}  # lower-case entry -> (split, list file)
    in_both = []  # (entry, the list files that name it)
    for split_name, named in entries.items():
        kept, repeated = [], {}
        for entry, list_name in named:
            first = first_listed.get(entry.lower())
            if first is None:
                first_listed[entry.lower()] = (split_name, list_name)
                kept.append((entry, list_name))
            elif first[0] == split_name:
                repeated.setdefault(list_name, []).append(entry)
            else:
                in_both.append((entry, [first[1], list_name]))
        lists[split_name] = kept
        lists.notices += [f"{list_name} names {len(names)} videos more than once (each is used once): "
                          f"{a_few(names, 5)}" for list_name, names in repeated.items()]
    if in_both:
        sources = list(dict.fromkeys(name for _, names in in_both for name in names))
        where = (f"in both {' and '.join(sources)}" if len(sources) > 1
                 else f"as both train (1) and test (2) in {sources[0]}")
        raise ValueError(f"{len(in_both)} videos are listed {where}: {a_few([entry for entry, _ in in_both], 5)}. "
                         "A video must be in one split only: fix the lists.")
    return lists


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


def ungrouped_notice(videos):
    """What it means for a split that some videos' names give no group
    (``records.groups.named_group``), or "" when every name gives one."""
    ungrouped = [v.video_id for v in videos if groups.named_group(v.video_id, v.label_name) is None]
    if not ungrouped:
        return ""
    share = "all" if len(ungrouped) == len(videos) else f"{len(ungrouped)} of"
    return (f"groups: {share} {len(videos)} videos have no group in their name (a UCF-101 gNN or an HMDB/JHMDB "
            f"source movie, e.g. {a_few(ungrouped, 2)}), so each is split on its own: clips cut from one source "
            "video may land on both sides of the split. Name them v_<Class>_gNN_cMM.avi by source, or give "
            "--splits_dir")


def _test_split_notices(videos, splits, class_names, test_fraction):
    if test_fraction == 0:
        return []
    notices = list(filter(None, [ungrouped_notice(videos)]))
    tested = {v.label for v in splits.get("test", [])}
    untested = sorted({v.label for v in videos} - tested)
    if not untested:
        return notices
    names = [class_names[label] for label in untested]
    notice = (f"{len(untested)} classes have no test video, because all their videos form one group (clips "
              f"of one group stay in one split): {a_few(names, 5)}")
    if not tested:
        notice += ("; no test split is written, and train.py will train without held-out evaluation. Add "
                   "videos of other groups, or give --splits_dir")
    return notices + [notice]


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
    listed = set()  # lower-case entries
    for split_name, entries in lists.items():
        chosen = []
        for entry, list_name in entries:
            listed.add(entry.lower())
            found = on_disk.get(entry.lower())
            if found is None:
                problems.append((entry, f"listed in {list_name} but not found under --videos", split_name))
                continue
            label = label_of[class_of(entry).lower()]
            chosen.append(Video(str(videos_dir / found), found, label, class_names[label]))
        splits[split_name] = chosen
    notices += lists.notices
    unlisted = sum(1 for f in classified if f.lower() not in listed)
    return VideoSet(class_names, {k: v for k, v in splits.items() if v}, problems, unlisted, notices)
