"""Real action video end to end, small enough for seconds: four JHMDB actions.

Synthetic features prove the mechanics; only real clips show that the
reader, the masks and the labels carry what a classifier needs. A wrong
label order, a mask that lets padding in or a reader that mixes videos
brings top-1 down to chance (0.25 here). Skips without ../shared/jhmdb-train.
"""

import pytest

from conftest import JHMDB
from extract import dataset, local_runner, plan
from rnn import training

# Four actions that look unalike, the first clips of each by name.
ACTIONS = ("golf", "pour", "pullup", "shoot_bow")
CLIPS_PER_ACTION = 12


@pytest.mark.skipif(not JHMDB.is_dir(), reason=f"{JHMDB} is absent")
def test_a_gru_on_four_real_jhmdb_actions_beats_chance_by_far(tmp_path):
    videos = tmp_path / "videos"
    for action in ACTIONS:
        (videos / action).mkdir(parents=True)
        for clip in sorted((JHMDB / action).glob("*.avi"))[:CLIPS_PER_ACTION]:
            (videos / action / clip.name).symlink_to(clip)
    # Held out by source movie, as JHMDB must be: no movie on both sides.
    video_set = dataset.load_videos(videos, test_fraction=0.3)
    assert not {v.group for v in video_set.splits["train"]} & {v.group for v in video_set.splits["test"]}
    features = tmp_path / "features"
    local_runner.extract(video_set, features, plan.ExtractConfig(backbone=plan.DEMO_BACKBONE, fps=10, seconds=1.5),
                         show_progress=False)

    metrics = training.train(training.TrainConfig(
        train_pattern=str(features / "train-*.tfrecord"), eval_pattern=str(features / "test-*.tfrecord"),
        logdir=str(tmp_path / "runs"), steps=120, show_progress=False))
    test = metrics["selected"]["test"]
    assert test["examples"] == len(video_set.splits["test"]) >= 8
    assert test["top1"] >= 0.6, metrics
