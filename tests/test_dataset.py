"""Labels and splits: deterministic class order, group-aware splits, UCF-101 lists."""

import csv

import pytest

from conftest import JHMDB
from extract import dataset
from records import groups


def _touch(root, *relative_paths):
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _ucf_tree(root, classes=("Basketball", "Archery", "Diving"), groups=6, clips=3):
    for name in classes:
        _touch(root, *(f"{name}/v_{name}_g{g:02d}_c{c:02d}.avi" for g in range(1, groups + 1)
                       for c in range(1, clips + 1)))


def test_class_order_is_sorted_not_listing_order(tmp_path, monkeypatch):
    _ucf_tree(tmp_path)
    real_walk = dataset.os.walk

    def reversed_walk(*args, **kwargs):
        for folder, subfolders, files in real_walk(*args, **kwargs):
            subfolders.reverse()
            yield folder, subfolders, list(reversed(files))

    monkeypatch.setattr(dataset.os, "walk", reversed_walk)
    video_set = dataset.load_videos(tmp_path)
    assert video_set.class_names == ["Archery", "Basketball", "Diving"]
    for videos in video_set.splits.values():
        for video in videos:
            assert video.label_name == video.video_id.split("/")[0]
            assert video_set.class_names[video.label] == video.label_name


def test_group_split_keeps_groups_together_and_is_reproducible(tmp_path):
    _ucf_tree(tmp_path)
    first = dataset.load_videos(tmp_path, test_fraction=0.3)
    second = dataset.load_videos(tmp_path, test_fraction=0.3)
    assert first.splits == second.splits
    train_groups = {v.group for v in first.splits["train"]}
    test_groups = {v.group for v in first.splits["test"]}
    assert train_groups and test_groups and not train_groups & test_groups
    # Every class is represented in test, with about 30 % of its groups.
    for label in range(3):
        held_out = {v.group for v in first.splits["test"] if v.label == label}
        assert len(held_out) == 2  # round(0.3 * 6)
    assert len(first.splits["train"]) + len(first.splits["test"]) == 3 * 6 * 3


def test_group_of_ucf_hmdb_and_other_names():
    assert groups.group_of("ApplyLipstick/v_ApplyLipstick_g08_c03.avi") == "applylipstick/g08"
    assert groups.group_of("x/v_ApplyLipstick_g08_c04.avi") == groups.group_of("y/v_applylipstick_g08_c01.mp4")
    # HMDB-51 / JHMDB: the source movie, the same in every class it appears in.
    assert groups.group_of("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi") == "April_09"
    assert groups.group_of("sit/TheLastManOnearth_sit_f_cm_np1_fr_med_2.avi") == "TheLastManOnearth"
    assert groups.group_of("walk/TheLastManOnearth_walk_u_nm_np2_le_bad_11.avi") == "TheLastManOnearth"
    # The class given (a deeper layout's class folder) is the one looked for.
    assert groups.group_of("src/run/Movie_run_f_cm_np1_ri_goo_0.avi", "run") == "Movie"
    assert groups.group_of("wave/some_hmdb_clip.avi") == "wave/some_hmdb_clip.avi"
    # HMDB's tags mark the name whatever the folder: one of HMDB-51's actions
    # ends the movie (issue 34 item 4); a name with tags and an unknown action
    # outside its own class's folder gives no group.
    assert groups.group_of("wave/Movie_run_f_cm_np1_ri_goo_0.avi") == "Movie"
    assert groups.group_of("wave/Movie_dance_f_cm_np1_ri_goo_0.avi") == "wave/Movie_dance_f_cm_np1_ri_goo_0.avi"


@pytest.mark.skipif(not (JHMDB / "GROUPS.tsv").is_file(), reason=f"{JHMDB} is absent")
def test_groups_of_the_real_jhmdb_clips_are_their_source_movies():
    """Every one of the 688 clips gets the source movie that GROUPS.tsv names."""
    with open(JHMDB / "GROUPS.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 688
    wrong = [(row["clip"], groups.group_of(row["clip"])) for row in rows
             if groups.group_of(row["clip"]) != row["source_movie"]]
    assert wrong == []


def test_a_source_movie_in_several_classes_stays_on_one_side(tmp_path):
    movies = [f"Movie{m}" for m in range(12)]
    _touch(tmp_path, *(f"{action}/{movie}_{action}_u_nm_np1_fr_goo_{n}.avi" for movie in movies
                       for action in ("sit", "stand", "walk") for n in range(2)))
    video_set = dataset.load_videos(tmp_path, test_fraction=0.25)
    test_movies = {v.group for v in video_set.splits["test"]}
    train_movies = {v.group for v in video_set.splits["train"]}
    assert test_movies and train_movies and not test_movies & train_movies
    assert train_movies | test_movies == set(movies)
    # Each held-out movie's clips of every class are held out with it.
    assert len(video_set.splits["test"]) == len(test_movies) * 3 * 2


def test_hmdb_split_lists(tmp_path):
    """HMDB-51's and JHMDB's <class>_test_split<N>.txt: 1 train, 2 test, 0 unused; classes sorted by name."""
    videos, splits_dir = tmp_path / "videos", tmp_path / "splits"
    clips = {action: [f"M{m}_{action}_f_cm_np1_fr_goo_0.avi" for m in range(3)] for action in ("wave", "clap")}
    _touch(videos, *(f"{action}/{clip}" for action, names in clips.items() for clip in names))
    splits_dir.mkdir()
    for action, names in clips.items():
        (splits_dir / f"{action}_test_split1.txt").write_text("".join(
            f"{clip} {kind}\n" for clip, kind in zip(names, ("1", "2", "0"))))
        (splits_dir / f"{action}_test_split2.txt").write_text("".join(f"{clip} 1\n" for clip in names))
    video_set = dataset.load_videos(videos, splits_dir, split=1)
    assert video_set.class_names == ["clap", "wave"]
    assert sorted(v.video_id for v in video_set.splits["train"]) == ["clap/M0_clap_f_cm_np1_fr_goo_0.avi",
                                                                     "wave/M0_wave_f_cm_np1_fr_goo_0.avi"]
    assert [v.label_name for v in video_set.splits["test"]] == ["clap", "wave"]
    assert video_set.unlisted == 2  # the clips marked 0
    assert set(dataset.load_videos(videos, splits_dir, split=2).splits) == {"train"}
    (splits_dir / "wave_test_split1.txt").write_text("M0_wave_f_cm_np1_fr_goo_0.avi train\n")
    with pytest.raises(ValueError, match=r"wave_test_split1.txt:1: expected '<clip> <0\|1\|2>'"):
        dataset.load_videos(videos, splits_dir, split=1)


def test_files_without_group_are_split_by_stable_hash(tmp_path):
    _touch(tmp_path, *(f"run/clip{i}.mp4" for i in range(20)), *(f"walk/clip{i}.mp4" for i in range(20)))
    splits = dataset.load_videos(tmp_path, test_fraction=0.25).splits
    assert len(splits["test"]) == 10
    # Adding unrelated files to another class does not move these.
    _touch(tmp_path, *(f"swim/clip{i}.mp4" for i in range(5)))
    again = dataset.load_videos(tmp_path, test_fraction=0.25).splits
    assert {v.video_id for v in splits["test"]} <= {v.video_id for v in again["test"]}


def test_zero_test_fraction_writes_only_train(tmp_path):
    _ucf_tree(tmp_path, groups=2, clips=1)
    assert set(dataset.load_videos(tmp_path, test_fraction=0).splits) == {"train"}


def test_videos_outside_class_folders_are_reported(tmp_path):
    _ucf_tree(tmp_path, groups=2, clips=1)
    _touch(tmp_path, "stray.mp4", "notes.txt", ".hidden/v_X_g01_c01.avi")
    video_set = dataset.load_videos(tmp_path)
    assert [(p, split) for p, _, split in video_set.problems] == [("stray.mp4", None)]
    assert "class folder" in video_set.problems[0][1]
    assert sum(map(len, video_set.splits.values())) == 6


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no video files"):
        dataset.load_videos(tmp_path)


def _write_ucf_lists(splits_dir, class_names, train, test, split=1):
    splits_dir.mkdir()
    (splits_dir / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(class_names, 1)))
    (splits_dir / f"trainlist{split:02d}.txt").write_text(
        "".join(f"{p} 1\n" for p in train))  # the label column is not used
    (splits_dir / f"testlist{split:02d}.txt").write_text("".join(f"{p}\n" for p in test))


def test_official_split_lists(tmp_path):
    videos = tmp_path / "videos"
    _touch(videos, "HandstandPushups/v_HandStandPushups_g01_c01.avi", "HandstandPushups/v_HandStandPushups_g08_c01.avi",
           "Archery/v_Archery_g01_c01.avi", "Archery/v_Archery_g08_c01.avi", "Archery/v_Archery_g09_c01.avi")
    # classInd order is not alphabetical here: it must win over sorting.
    _write_ucf_lists(tmp_path / "lists", ["HandstandPushups", "Archery"],
                     train=["HandStandPushups/v_HandStandPushups_g08_c01.avi", "Archery/v_Archery_g08_c01.avi",
                            "Archery/v_Archery_g10_c01.avi"],
                     test=["HandstandPushups/v_HandStandPushups_g01_c01.avi", "Archery/v_Archery_g01_c01.avi"])
    video_set = dataset.load_videos(videos, tmp_path / "lists", split=1)
    assert video_set.class_names == ["HandstandPushups", "Archery"]
    train = {v.video_id: v.label for v in video_set.splits["train"]}
    assert train == {"HandstandPushups/v_HandStandPushups_g08_c01.avi": 0, "Archery/v_Archery_g08_c01.avi": 1}
    assert {v.video_id for v in video_set.splits["test"]} == {
        "HandstandPushups/v_HandStandPushups_g01_c01.avi", "Archery/v_Archery_g01_c01.avi"}
    assert video_set.problems == [("Archery/v_Archery_g10_c01.avi",
                                   "listed in trainlist01.txt but not found under --videos", "train")]
    assert video_set.unlisted == 1  # g09 is in neither list
    with pytest.raises(ValueError, match="trainlist02.txt not found"):
        dataset.load_videos(videos, tmp_path / "lists", split=2)


def test_malformed_class_index(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 A\n3 B\n")
    with pytest.raises(ValueError, match="without gaps"):
        dataset.read_class_index(tmp_path / "classInd.txt")


def _all_videos(video_set):
    return sorted(v.video_id for videos in video_set.splits.values() for v in videos)


def test_symlinks_list_each_real_file_once(tmp_path):
    """Hardening 3: a link back into the tree, a link above it, two links that
    point at each other and a duplicate file link list nothing twice and never
    relabel a video; what was left out is reported."""
    videos = tmp_path / "videos"
    _ucf_tree(videos, classes=("Archery", "Diving"), groups=2, clips=1)
    (videos / "Archery" / "loop").symlink_to(".")  # ln -s . class/loop
    (videos / "Diving" / "up").symlink_to("..")  # ln -s .. class/up: the videos folder itself
    (videos / "Diving" / "above").symlink_to("../..")  # the folder holding the videos folder
    (videos / "Diving" / "a").symlink_to("b")  # two links to each other
    (videos / "Diving" / "b").symlink_to("a")
    (videos / "Diving" / "again.avi").symlink_to(videos / "Archery" / "v_Archery_g01_c01.avi")
    outside = tmp_path / "elsewhere" / "Swimming"
    _touch(outside.parent, "Swimming/v_Swimming_g01_c01.avi", "Swimming/v_Swimming_g02_c01.avi")
    (videos / "Swimming").symlink_to(outside)  # a class kept on another disk: followed
    (videos / "Swimming2").symlink_to(outside)  # the same folder again: not

    video_set = dataset.load_videos(videos, test_fraction=0.5)
    assert _all_videos(video_set) == [
        "Archery/v_Archery_g01_c01.avi", "Archery/v_Archery_g02_c01.avi", "Diving/v_Diving_g01_c01.avi",
        "Diving/v_Diving_g02_c01.avi", "Swimming/v_Swimming_g01_c01.avi", "Swimming/v_Swimming_g02_c01.avi"]
    assert video_set.class_names == ["Archery", "Diving", "Swimming"]
    for videos_of_split in video_set.splits.values():
        for video in videos_of_split:
            assert video.label_name == video.video_id.split("/")[0]
    listing = dataset.find_video_files(videos)
    reasons = dict(listing.skipped)
    assert "inside the videos folder" in reasons["Archery/loop"]
    assert "inside the videos folder" in reasons["Diving/up"]
    assert "above the videos folder" in reasons["Diving/above"]
    assert "broken or looping" in reasons["Diving/a"] and "broken or looping" in reasons["Diving/b"]
    assert "same file as Archery/v_Archery_g01_c01.avi" in reasons["Diving/again.avi"]
    assert "listed already" in reasons["Swimming2"]
    assert any("left out so that each video is listed once" in notice for notice in video_set.notices)


def test_split_lists_repeated_lines_count_once_and_a_video_in_both_is_refused(tmp_path):
    """Hardening 4."""
    videos = tmp_path / "videos"
    _touch(videos, "Archery/v_Archery_g01_c01.avi", "Archery/v_Archery_g02_c01.avi")
    _write_ucf_lists(tmp_path / "lists", ["Archery"],
                     train=["Archery/v_Archery_g01_c01.avi", "Archery/v_Archery_g01_c01.avi",
                            "archery/V_ARCHERY_G01_C01.avi"],
                     test=["Archery/v_Archery_g02_c01.avi"])
    video_set = dataset.load_videos(videos, tmp_path / "lists")
    assert [v.video_id for v in video_set.splits["train"]] == ["Archery/v_Archery_g01_c01.avi"]
    assert any("trainlist01.txt names 2 videos more than once" in n for n in video_set.notices)

    (tmp_path / "lists" / "testlist01.txt").write_text("Archery/v_Archery_g02_c01.avi\nArchery/v_archery_g01_c01.avi\n")
    with pytest.raises(ValueError, match="listed in both trainlist01.txt and testlist01.txt: "
                                         "Archery/v_archery_g01_c01.avi"):
        dataset.load_videos(videos, tmp_path / "lists")


def test_missing_class_index_is_a_clear_error(tmp_path):
    """Hardening 7: no traceback-level FileNotFoundError."""
    _touch(tmp_path / "videos", "Archery/v_Archery_g01_c01.avi")
    (tmp_path / "lists").mkdir()
    with pytest.raises(ValueError, match="classInd.txt not found: --splits_dir must hold"):
        dataset.load_videos(tmp_path / "videos", tmp_path / "lists")


def test_nested_layout_is_flagged_and_class_depth_reads_it(tmp_path):
    """Hardening 10: source/class/clip gives source folders as classes unless
    --class_depth 2; the layout is flagged; empty class folders are reported."""
    _touch(tmp_path, "hmdb/wave/a.avi", "hmdb/wave/b.avi", "ucf/wave/c.avi", "ucf/run/d.avi", "ucf/run/e.avi")
    (tmp_path / "empty_class").mkdir()
    # Issue 16, item 9: when every class folder holds videos only in
    # subfolders, the default depth stops with the reason...
    with pytest.raises(ValueError, match="all 2 class folders hold videos only in subfolders .* Use --class_depth 2 "
                                         "if the subfolders are the classes .* or --class_depth 1 to take these"):
        dataset.load_videos(tmp_path, test_fraction=0)
    # ...unless --class_depth 1 is given explicitly.
    flat = dataset.load_videos(tmp_path, test_fraction=0, class_depth=1)
    assert flat.class_names == ["hmdb", "ucf"]
    assert any("hold videos only in subfolders" in n and "--class_depth 2" in n for n in flat.notices)
    assert any("1 class folders hold no video and are left out: empty_class" in n for n in flat.notices)

    nested = dataset.load_videos(tmp_path, test_fraction=0, class_depth=2)
    assert nested.class_names == ["run", "wave"]
    labels = {v.video_id: v.label_name for v in nested.splits["train"]}
    assert labels == {"hmdb/wave/a.avi": "wave", "hmdb/wave/b.avi": "wave", "ucf/wave/c.avi": "wave",
                      "ucf/run/d.avi": "run", "ucf/run/e.avi": "run"}
    assert not any("subfolders" in n for n in nested.notices)


def test_classes_without_a_test_video_are_named(tmp_path):
    """Hardening 11: one group per class means no test video; say which and why."""
    _touch(tmp_path, "a/v_A_g01_c01.avi", "a/v_A_g01_c02.avi", "b/v_B_g01_c01.avi", "b/v_B_g02_c01.avi")
    video_set = dataset.load_videos(tmp_path, test_fraction=0.2)
    assert {v.video_id for v in video_set.splits["test"]} <= {"b/v_B_g01_c01.avi", "b/v_B_g02_c01.avi"}
    assert any(n.startswith("1 classes have no test video, because all their videos form one group") and
               n.endswith(": a") for n in video_set.notices)

    _touch(tmp_path / "only", "a/v_A_g01_c01.avi", "b/v_B_g01_c01.avi")
    none = dataset.load_videos(tmp_path / "only", test_fraction=0.2)
    assert set(none.splits) == {"train"}
    assert any("no test split is written" in n for n in none.notices)


def _hmdb_lists(splits_dir, lists):
    """``<class>_test_split1.txt`` files: class -> [(clip, "1" or "2")]."""
    splits_dir.mkdir(exist_ok=True)
    for action, entries in lists.items():
        (splits_dir / f"{action}_test_split1.txt").write_text("".join(f"{clip} {kind}\n" for clip, kind in entries))


def test_each_hmdb_list_is_the_class_its_file_names(tmp_path):
    """Issue 34 item 1: kick_ball_test_split1.txt sorts before kick_test_split1.txt,
    while kick sorts before kick_ball; each list belongs to its own class."""
    videos, splits_dir = tmp_path / "videos", tmp_path / "splits"
    clips = {action: [f"M{m}_{action}_f_cm_np1_fr_goo_0.avi" for m in range(4)] for action in ("kick", "kick_ball")}
    _touch(videos, *(f"{action}/{clip}" for action, names in clips.items() for clip in names))
    _hmdb_lists(splits_dir, {action: [(clip, "1" if m < 3 else "2") for m, clip in enumerate(names)]
                             for action, names in clips.items()})
    video_set = dataset.load_videos(videos, splits_dir)
    assert video_set.class_names == ["kick", "kick_ball"]
    assert not video_set.problems  # nothing "listed but not found"
    found = [(v.video_id.split("/")[0], v.label_name) for split in video_set.splits.values() for v in split]
    assert len(found) == 8 and all(folder == label for folder, label in found)


def test_an_hmdb_list_naming_a_clip_twice_or_in_both_splits(tmp_path):
    """Issue 34 item 2: a clip listed twice is used once (and said); a clip
    listed as train and as test, by the same file, is refused by name."""
    videos, splits_dir = tmp_path / "videos", tmp_path / "splits"
    names = [f"M{m}_run_f_cm_np1_fr_goo_0.avi" for m in range(3)]
    _touch(videos, *(f"run/{clip}" for clip in names))
    _hmdb_lists(splits_dir, {"run": [(names[0], "1"), (names[1], "1"), (names[0], "1"), (names[2], "2")]})
    video_set = dataset.load_videos(videos, splits_dir)
    assert sorted(v.video_id for v in video_set.splits["train"]) == [f"run/{names[0]}", f"run/{names[1]}"]
    assert any(f"run_test_split1.txt names 1 videos more than once (each is used once): run/{names[0]}" in notice
               for notice in video_set.notices)
    _hmdb_lists(splits_dir, {"run": [(names[0], "1"), (names[1], "1"), (names[0], "2")]})
    with pytest.raises(ValueError, match=rf"1 videos are listed as both train \(1\) and test \(2\) in "
                                         rf"run_test_split1.txt: run/{names[0]}\. A video must be in one split"):
        dataset.load_videos(videos, splits_dir)


def test_classes_that_differ_only_in_case_are_refused_by_name(tmp_path):
    """Issue 34 item 11: split lists are matched without case, so Run/ and run/
    cannot be told apart: refused, naming them (not videos that vanish)."""
    videos = tmp_path / "videos"
    _touch(videos, "Run/v_Run_g01_c01.avi", "run/v_run_g02_c01.avi")
    _write_ucf_lists(tmp_path / "lists", ["Run", "run"], train=["Run/v_Run_g01_c01.avi"],
                     test=["run/v_run_g02_c01.avi"])
    with pytest.raises(ValueError, match="classInd.txt names classes that differ only in case \\(Run and run\\)"):
        dataset.load_videos(videos, tmp_path / "lists")


def test_renamed_jhmdb_folders_keep_their_source_movies():
    """Issue 34 item 4: the movie comes from HMDB's name pattern whatever the
    class folder is called (here without underscores, and in other words)."""
    if not (JHMDB / "GROUPS.tsv").exists():
        pytest.skip(f"{JHMDB} is absent")
    with open(JHMDB / "GROUPS.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for rename in (lambda name: name.replace("_", ""), lambda name: name.replace("_", " ").title(),
                   lambda name: "actions"):
        for row in rows:
            video_id = f"{rename(row['class'])}/{row['clip'].split('/')[-1]}"
            assert groups.group_of(video_id) == row["source_movie"], video_id


def test_a_split_of_videos_without_groups_says_what_it_means(tmp_path):
    """Issue 34 item 4: when names give no group, the split says so (how many,
    and that clips of one source may straddle it)."""
    _touch(tmp_path, "run/M1_run_u_nm_np1_fr_goo_0.avi", "run/clip2.mp4", "walk/clip3.mp4", "walk/clip4.mp4")
    notices = dataset.load_videos(tmp_path, test_fraction=0.5).notices
    assert any(notice.startswith("groups: 3 of 4 videos have no group in their name") and
               "both sides of the split" in notice for notice in notices)
    _ucf_tree(tmp_path / "ucf", groups=2, clips=1)
    assert not any(notice.startswith("groups:") for notice in dataset.load_videos(tmp_path / "ucf").notices)
