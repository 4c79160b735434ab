"""Labels and splits: deterministic class order, group-aware splits, UCF-101 lists."""

import pytest

from extract import dataset


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
    train_groups = {dataset.group_key(v.video_id) for v in first.splits["train"]}
    test_groups = {dataset.group_key(v.video_id) for v in first.splits["test"]}
    assert train_groups and test_groups and not train_groups & test_groups
    # Every class is represented in test, with about 30 % of its groups.
    for label in range(3):
        held_out = {dataset.group_key(v.video_id) for v in first.splits["test"] if v.label == label}
        assert len(held_out) == 2  # round(0.3 * 6)
    assert len(first.splits["train"]) + len(first.splits["test"]) == 3 * 6 * 3


def test_group_key():
    assert dataset.group_key("ApplyLipstick/v_ApplyLipstick_g08_c03.avi") == "applylipstick/g08"
    assert dataset.group_key("x/v_ApplyLipstick_g08_c04.avi") == dataset.group_key("y/v_applylipstick_g08_c01.mp4")
    assert dataset.group_key("wave/some_hmdb_clip.avi") == "wave/some_hmdb_clip.avi"


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
