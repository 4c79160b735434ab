"""Which videos belong together, and which groups a split holds out.

Clips cut from one long video share actors, background and camera: a split
that puts some in training and others in held-out data scores recognition
of the scene, not of the action. So every split of this project (the test
split of ``python -m extract``, the validation split of ``train.py``) holds
out whole groups, across all classes:

- UCF-101 names (``v_<Class>_gNN_cMM``): the group ``gNN`` of that class;
- HMDB-51 and JHMDB names (``<source movie>_<action>_<tags>_<n>``, tags such
  as ``u_nm_np1_fr_goo``): the source movie, which often appears in several
  classes (the same movie in ``sit``, ``stand`` and ``walk``). The tags mark
  such a name whatever its folder is called; the action is the class folder's
  name (compared without case, ``_``, ``-`` or spaces: a renamed
  ``brushhair/`` still finds ``brush_hair``), else one of HMDB-51's 51;
- any other name: the video alone, named by its class folder and its path
  below it (so that the same clips listed from another root, with another
  ``--class_depth``, fall in the same split).

The extractor records each video's group in its records and shard index, so
that every later split uses the same groups.
"""

import hashlib
import pathlib
import re

_UCF_NAME = re.compile(r"^v_(?P<action>.+)_g(?P<group>\d+)_c(?P<clip>\d+)$", re.IGNORECASE)
# HMDB-51's tags after the action: visible body part, camera motion, number
# of people, viewpoint, quality, clip number.
_HMDB_TAGS = r"[fhlu]_(?:cm|nm)_np\d+_(?:fr|ba|le|ri)_(?:goo|med|bad)_\d+"
_HMDB_NAME = re.compile(rf"^(?P<movie_and_action>.+)_{_HMDB_TAGS}$", re.IGNORECASE)
# HMDB-51's actions (JHMDB's 21 are among them), as its file names spell them.
HMDB_ACTIONS = (
    "brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive", "draw_sword", "dribble",
    "drink", "eat", "fall_floor", "fencing", "flic_flac", "golf", "handstand", "hit", "hug", "jump", "kick",
    "kick_ball", "kiss", "laugh", "pick", "pour", "pullup", "punch", "push", "pushup", "ride_bike", "ride_horse",
    "run", "shake_hands", "shoot_ball", "shoot_bow", "shoot_gun", "sit", "situp", "smile", "smoke", "somersault",
    "stand", "swing_baseball", "sword", "sword_exercise", "talk", "throw", "turn", "walk", "wave",
)


def group_of(video_id, class_name=None):
    """The group of a video: clips sharing it must stay in one split.

    Args:
      video_id: path of the video relative to the videos folder.
      class_name: its class (the HMDB-style source movie is the part of the
        name before ``_<action>_<tags>``); None to take the class folder.

    Returns:
      ``"applylipstick/g08"`` for ``ApplyLipstick/v_ApplyLipstick_g08_c03.avi``,
      ``"April_09"`` for ``brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi``
      (or ``brushhair/...``), else the video's path from its class folder on
      (``"wave/clip1.avi"`` for ``src/wave/clip1.avi`` of class ``wave``), or
      ``video_id`` itself.
    """
    path = pathlib.PurePosixPath(video_id)
    class_name = class_name or (path.parts[0] if len(path.parts) > 1 else None)
    named = named_group(video_id, class_name)
    if named:
        return named
    folders = path.parts[:-1]
    if class_name and class_name in folders:
        start = len(folders) - 1 - folders[::-1].index(class_name)
        return "/".join(path.parts[start:])
    return video_id


def named_group(video_id, class_name=None):
    """The group a video's name gives (a UCF-101 ``gNN``, an HMDB/JHMDB source
    movie), or None for a name that gives none (such a video is its own
    group: ``group_of``)."""
    stem = pathlib.PurePosixPath(video_id).stem
    match = _UCF_NAME.match(stem)
    if match:
        return f"{match['action'].lower()}/g{match['group']}"
    match = _HMDB_NAME.match(stem)
    if match:
        return _movie(match["movie_and_action"], class_name)
    return None


def _letters(name):
    return re.sub(r"[\s_-]", "", name).lower()


def _movie(movie_and_action, class_name):
    """The source movie of an HMDB name's ``<movie>_<action>`` part: the
    action is the class name (loosely compared), else the longest of HMDB-51's
    actions the part ends with; None if neither."""
    words = movie_and_action.split("_")
    # Where the action may start, the longest action first ("a__catch" is the
    # movie "a_" and the action "catch": an action starts with a letter).
    cuts = [cut for cut in range(1, len(words)) if words[cut]]
    for cut in cuts:
        if class_name and _letters("".join(words[cut:])) == _letters(class_name):
            return "_".join(words[:cut])
    for cut in cuts:
        if "_".join(words[cut:]).lower() in HMDB_ACTIONS:
            return "_".join(words[:cut])
    return None


def stable_hash(text):
    """A hash of ``text`` that is the same on every machine and Python run."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def held_out_groups(videos, fraction, at_least_one=True):
    """The groups to hold out so that each class loses about ``fraction`` of its groups.

    Within each class, groups are ordered by a stable hash of their name and
    the first ``round(fraction * groups)`` are held out (with
    ``at_least_one``: at least one if the class has two groups or more, and
    ``fraction > 0``; never all of them). A group held out for one class is
    held out for every class it appears in. The result depends only on the
    names, not on listing order.

    Args:
      videos: ``(group, label)`` pairs, one per video.
      fraction: share of each class's groups, in [0, 1).
      at_least_one: hold out one group of a class whose share rounds to 0.

    Returns:
      The set of held-out group names.
    """
    groups_by_class = {}
    for group, label in videos:
        groups_by_class.setdefault(label, set()).add(group)
    held_out = set()
    for groups in groups_by_class.values():
        ordered = sorted(groups, key=stable_hash)
        count = round(fraction * len(ordered))
        if at_least_one and fraction > 0 and len(ordered) >= 2:
            count = max(count, 1)
        held_out.update(ordered[:min(count, len(ordered) - 1)])
    return held_out
