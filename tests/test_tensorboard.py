"""What TensorBoard shows of a short demo run (issue 11), read back with
TensorBoard's own readers: HParams judged by held-out metrics, grouped
scalars, the confusion matrix and per-class charts, PR curves, misclassified
clips, and the embeddings projector with its sprite of thumbnails."""

import io
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

import train
from records import manifest as manifest_lib
from records import schema
from rnn import models


def _train(features, logdir, steps=40):
    return train.train(train.TrainConfig(
        model=models.ModelConfig(units=32), train_pattern=str(features / "train-*.tfrecord"),
        eval_pattern=str(features / "test-*.tfrecord"), logdir=str(logdir), steps=steps, eval_every=20,
        log_every=10, checkpoint_every=20))


def _accumulator(folder):
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def _image(accumulator, tag):
    """The last image of ``tag`` as a PIL image."""
    from PIL import Image

    event = accumulator.Tensors(tag)[-1]
    width, height, png = tf.make_ndarray(event.tensor_proto)[:3]
    image = Image.open(io.BytesIO(png))
    assert image.size == (int(width), int(height))
    return image


@pytest.fixture(scope="module")
def demo_run(demo_extraction, tmp_path_factory):
    _, features, extraction = demo_extraction
    assert extraction.returncode == 0, extraction.stderr
    logdir = tmp_path_factory.mktemp("tensorboard")
    return features, logdir, _train(features, logdir)


def test_hparams_compare_runs_by_held_out_metrics(demo_run):
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import metadata

    _, logdir, _ = demo_run
    root = _accumulator(logdir / "gru")
    contents = {tag: root.SummaryMetadata(tag).plugin_data.content for tag in root.Tags()["tensors"]}
    experiment = metadata.parse_experiment_plugin_data(contents[metadata.EXPERIMENT_TAG])
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    assert {("eval", "metrics/top1"), ("eval", "metrics/loss"), ("train", "metrics/loss")} <= metrics
    assert "optim/learning_rate" not in {tag for _, tag in metrics}  # a hyperparameter, not a metric
    start = metadata.parse_session_start_info_plugin_data(contents[metadata.SESSION_START_INFO_TAG])
    assert {"cell", "units", "learning_rate", "seed", "steps", "features.backbone", "features.image_size",
            "features.max_frames", "features.fps"} <= set(start.hparams)
    assert start.hparams["features.backbone"].string_value == "efficientnet_lite0"
    end = metadata.parse_session_end_info_plugin_data(contents[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS


def test_scalars_are_grouped_and_train_and_eval_share_charts(demo_run):
    _, logdir, _ = demo_run
    train_tags = set(_accumulator(logdir / "gru" / "train").Tags()["tensors"])
    eval_tags = set(_accumulator(logdir / "gru" / "eval").Tags()["tensors"])
    scalars = {tag for tag in train_tags if not tag.startswith(("weights/",))}
    assert {tag.split("/")[0] for tag in scalars} == {"metrics", "optim", "perf", "gradients"}
    assert {"metrics/loss", "metrics/top1", "metrics/top3"} <= train_tags & eval_tags  # one chart each
    assert "metrics/top5" not in train_tags | eval_tags  # 4 classes: top-5 would always be 1
    assert {"gradients/gru_0", "gradients/gru_1", "gradients/classifier"} <= train_tags
    assert {"weights/classifier/kernel", "weights/gru_0/gru_cell/kernel"} <= train_tags  # not "logits"


def test_confusion_matrix_per_class_charts_pr_curves_and_misclassified_clips(demo_run):
    _, logdir, metrics = demo_run
    evaluation = _accumulator(logdir / "gru" / "eval")
    tags = set(evaluation.Tags()["tensors"])
    confusion = _image(evaluation, "confusion_matrix")
    assert confusion.size[0] >= 600 and confusion.size[1] >= 500
    assert _image(evaluation, "per_class/precision_recall").size[1] >= 200
    clips = _image(evaluation, "misclassified_clips")
    wrong = round((1 - metrics["final_eval"]["top1"]) * metrics["final_eval"]["examples"])
    # A grid of thumbnails, or (nothing misclassified) a one-line note saying so.
    assert (clips.size[1] > 200) == (wrong > 0)
    class_names = json.loads((logdir / "gru" / "run.json").read_text())["extraction"]["class_names"]
    curves = {tag for tag in tags if tag.startswith("pr_curve/")}
    assert curves == {f"pr_curve/{name}/pr_curves" for name in class_names}
    assert evaluation.SummaryMetadata(sorted(curves)[0]).plugin_data.plugin_name == "pr_curves"


def _projector(folder):
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    config = projector.ProjectorConfig()
    text_format.Parse((folder / "projector_config.pbtxt").read_text(), config)
    return config


def test_projector_shows_held_out_videos_with_thumbnails(demo_run):
    from PIL import Image

    from records import files

    _, logdir, metrics = demo_run
    folder = logdir / "gru" / "eval"
    config = _projector(folder)
    held_out = metrics["final_eval"]["examples"]
    header, rows = files.read_tsv(folder / "metadata.tsv")
    assert header == ["video", "label", "prediction", "correct"] and len(rows) == held_out
    checkpoint = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(folder)))
    for embedding in config.embeddings:
        assert embedding.metadata_path == "metadata.tsv" and embedding.sprite.image_path == "sprite.png"
        shape = checkpoint.get_variable_to_shape_map()[embedding.tensor_name]
        assert shape[0] == held_out
    assert {e.tensor_name.split("/")[0] for e in config.embeddings} == {"final_state", "mean_cnn_feature"}
    side = config.embeddings[0].sprite.single_image_dim[0]
    sprite = Image.open(folder / "sprite.png")
    assert sprite.size[0] >= side and sprite.size[0] % side == 0
    assert np.asarray(sprite).std() > 5  # real pictures, not an empty sheet


def test_old_shards_without_thumbnails_still_train_and_the_projector_says_why(demo_run, tmp_path):
    """Shards written before thumbnails were stored: no sprite, and a note."""
    features, _, _ = demo_run
    old = tmp_path / "old_features"
    shutil.copytree(features, old)
    for shard in old.glob("*.tfrecord"):
        examples = [schema.decode_video(record) for record in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator()]
        assert all(example["thumbnail"] for example in examples)
        with tf.io.TFRecordWriter(str(shard)) as writer:
            for e in examples:
                writer.write(schema.encode_video(e["video_id"], e["label"], e["label_name"],
                                                 e["features"][:e["num_frames"]], len(e["features"]), e["fps"],
                                                 e["dtype"]))
    for index in (old / "index").glob("*.json"):  # indexes of that time said nothing of the shard's bytes
        entry = json.loads(index.read_text())
        index.write_text(json.dumps({key: entry[key] for key in ("shard", "videos", "errors")}))
    assert manifest_lib.read_manifest(old)["complete"]
    metrics = _train(old, tmp_path / "logs", steps=20)
    assert metrics["final_eval"]["examples"] > 0
    folder = tmp_path / "logs" / "gru" / "eval"
    assert not (folder / "sprite.png").exists()
    assert all(not e.sprite.image_path for e in _projector(folder).embeddings)
    note = _accumulator(folder).Tensors("projector/no_sprite")[-1]
    assert b"extracted before thumbnails were stored" in tf.make_ndarray(note.tensor_proto).item()
