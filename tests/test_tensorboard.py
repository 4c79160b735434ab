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

from records import manifest as manifest_lib
from records import schema
from rnn import evaluation, models, training


def _train(features, logdir, steps=40):
    return training.train(training.TrainConfig(
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


def _hparams_contents(folder):
    from tensorboard.plugins.hparams import metadata

    events = _accumulator(folder)
    return {tag: events.SummaryMetadata(tag).plugin_data.content for tag in events.Tags()["tensors"]
            if events.SummaryMetadata(tag).plugin_data.plugin_name == metadata.PLUGIN_NAME}


def test_hparams_session_of_a_run(demo_run):
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import metadata

    _, logdir, metrics = demo_run
    session = _hparams_contents(logdir / "gru")
    # No experiment anywhere: TensorBoard works the table out from the sessions (a written one goes stale).
    assert metadata.EXPERIMENT_TAG not in session and not (logdir / "_hparams").exists()
    start = metadata.parse_session_start_info_plugin_data(session[metadata.SESSION_START_INFO_TAG])
    assert {"cell", "units", "learning_rate", "seed", "steps", "features.backbone", "features.precision",
            "features.image_size", "features.max_frames", "features.fps"} <= set(start.hparams)
    # Numbers as text, as entered (the table showed 40.000 beside 0.001; issue 35 item 3).
    assert start.hparams["steps"].string_value == "40" and start.hparams["units"].string_value == "32"
    assert start.hparams["learning_rate"].string_value == "0.001"
    assert "epochs" not in start.hparams  # asked for in steps: no epochs=30 in the table
    assert start.hparams["features.backbone"].string_value == "efficientnet_lite0"
    end = metadata.parse_session_end_info_plugin_data(session[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    # The demo's two training groups a class give no validation split: the final model is exported, its
    # test top-1 is the one shown, and no "best" chosen on the test split is written anywhere.
    assert metrics["selected"]["chosen_on"] == "final step (no validation split)"
    assert not (logdir / "gru" / "validation").exists()
    evaluation = _accumulator(logdir / "gru" / "test")
    selected = tf.make_ndarray(evaluation.Tensors("metrics/selected_top1")[-1].tensor_proto)
    assert float(selected) == metrics["selected"]["test"]["top1"]
    assert "metrics/selected_step" not in evaluation.Tags()["tensors"]


def _tensorboard_json(port, path, body=None):
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def test_a_running_tensorboard_shows_what_differs_after_a_new_run(demo_run, tmp_path):
    """Issue 21, items 1 and 2. TensorBoard is started on one run (and an
    experiment folder left by an earlier version); then a run that differs
    only in learning rate is trained. Asked over HTTP, the running
    TensorBoard then lists learning_rate first, marked as the one
    hyperparameter that differs, its metric columns start with the
    metrics (not gradient norms), and no run in its list is not a run."""
    import socket
    import subprocess
    import sys
    import time

    from conftest import started

    features, logdir, _ = demo_run
    runs = tmp_path / "logs"
    shutil.copytree(logdir / "gru", runs / "gru")
    old_experiment = tf.summary.create_file_writer(str(runs / "_hparams"))  # what earlier versions wrote
    with old_experiment.as_default():
        tf.summary.scalar("stale", 1.0, step=0)
    old_experiment.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", runs, "--port", port, "--host", "127.0.0.1",
               "--reload_interval", "1"]
    with started(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE):
        def experiment():
            try:
                return _tensorboard_json(port, "/data/plugin/hparams/experiment",
                                         {"experimentName": "", "includeMetrics": True})
            except OSError:
                return {}

        def wait_for(condition, what):
            deadline = time.monotonic() + 120
            while True:
                seen = experiment()
                if condition(seen):
                    return seen
                assert time.monotonic() < deadline, f"TensorBoard gave no {what}: {seen}"
                time.sleep(1)

        first = wait_for(lambda seen: seen.get("hparamInfos"), "experiment")
        assert not any(info.get("differs") for info in first["hparamInfos"])  # one run: nothing differs
        training.train(training.TrainConfig(
            model=models.ModelConfig(units=32), train_pattern=str(features / "train-*.tfrecord"),
            eval_pattern=str(features / "test-*.tfrecord"), logdir=str(runs), run_name="gru_lr0.01", steps=40,
            eval_every=20, log_every=10, checkpoint_every=20, learning_rate=0.01))
        assert not (runs / "_hparams").exists()  # the earlier version's experiment is gone
        second = wait_for(lambda seen: any(info.get("differs") for info in seen.get("hparamInfos", [])),
                          "differing hyperparameter")
        assert [(info["name"], info.get("differs", False)) for info in second["hparamInfos"]][:2] == [
            ("learning_rate", True), ("batch_size", False)]
        metrics = [(info["name"]["group"], info["name"]["tag"]) for info in second["metricInfos"]]
        assert {("test", "metrics/selected_top1"), ("test", "metrics/top1"), ("test", "metrics/top3"),
                ("test", "metrics/loss"), ("train", "metrics/loss")} <= set(metrics)
        sections = [tag.split("/")[0] for _, tag in metrics]
        assert sections == sorted(sections, key=lambda section: section != "metrics"), sections  # metrics first
        steps = next(info for info in second["hparamInfos"] if info["name"] == "steps")
        assert steps["domainDiscrete"] == ["40"]  # shown as 40, not 40.000
        deadline = time.monotonic() + 60
        while "_hparams" in _tensorboard_json(port, "/data/runs"):
            assert time.monotonic() < deadline, "TensorBoard still lists _hparams as a run"
            time.sleep(1)
        assert {"gru", "gru/train", "gru/test", "gru_lr0.01"} <= set(_tensorboard_json(port, "/data/runs"))


def test_scalars_are_grouped_and_train_and_eval_share_charts(demo_run):
    _, logdir, _ = demo_run
    train_tags = set(_accumulator(logdir / "gru" / "train").Tags()["tensors"])
    eval_tags = set(_accumulator(logdir / "gru" / "test").Tags()["tensors"])
    scalars = {tag for tag in train_tags if not tag.startswith(("weights/",))}
    # Sections in the order TensorBoard lists them, the metrics first.
    assert {tag.split("/")[0] for tag in scalars} == {"metrics", "optim", "perf"}
    assert {"metrics/loss", "metrics/top1", "metrics/top3"} <= train_tags & eval_tags  # one chart each
    # The demo has two source groups a class: too few to carve a validation
    # split, so the final model is the one exported, and eval/ says its top-1.
    assert not (logdir / "gru" / "validation").exists()
    assert "metrics/selected_top1" in eval_tags and "metrics/selected_step" not in eval_tags
    assert "metrics/top5" not in train_tags | eval_tags  # 4 classes: top-5 would always be 1
    # One gradient norm per layer (the default: 1 GRU).
    assert {"optim/gradient_norm/gru_0", "optim/gradient_norm/classifier"} <= train_tags
    assert {"weights/classifier/kernel", "weights/gru_0/gru_cell/kernel"} <= train_tags  # not "logits"


def test_confusion_matrix_per_class_charts_pr_curves_and_misclassified_clips(demo_run):
    _, logdir, metrics = demo_run
    evaluation = _accumulator(logdir / "gru" / "test")
    tags = set(evaluation.Tags()["tensors"])
    confusion = _image(evaluation, "predictions/confusion_matrix")
    assert confusion.size[0] >= 600 and confusion.size[1] >= 500
    assert _image(evaluation, "predictions/per_class_precision_recall").size[1] >= 200
    clips = _image(evaluation, "predictions/misclassified_clips")
    wrong = round((1 - metrics["final"]["test"]["top1"]) * metrics["final"]["test"]["examples"])
    # A grid of thumbnails, or (nothing misclassified) a one-line note saying so.
    assert (clips.size[1] > 200) == (wrong > 0)
    class_names = json.loads((logdir / "gru" / "run.json").read_text())["extraction"]["class_names"]
    curves = {tag for tag in tags if tag.startswith("pr_curve/")}
    assert curves == {f"pr_curve/{name}/pr_curves" for name in class_names}
    assert evaluation.SummaryMetadata(sorted(curves)[0]).plugin_data.plugin_name == "pr_curves"
    # Each curve says what it rests on (issue 21, item 5): the demo holds out 2 videos a class.
    held_out = metrics["final"]["test"]["examples"]
    assert evaluation.SummaryMetadata(f"pr_curve/{class_names[0]}/pr_curves").summary_description == \
        f"{held_out // len(class_names)} held-out videos of {class_names[0]} (of {held_out} held-out videos)"


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
    folder = logdir / "gru" / "test"
    config = _projector(folder)
    held_out = metrics["final"]["test"]["examples"]
    header, rows = files.read_tsv(folder / "metadata.tsv")
    assert header == ["video", "label", "prediction", "correct"] and len(rows) == held_out
    checkpoint = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(folder)))
    for embedding in config.embeddings:
        assert embedding.metadata_path == "metadata.tsv" and embedding.sprite.image_path == "sprite.png"
        shape = checkpoint.get_variable_to_shape_map()[embedding.tensor_name]
        assert shape[0] == held_out
    # Plain names (issue 16, item 5), not "final_state/.ATTRIBUTES/VARIABLE_VALUE".
    assert [e.tensor_name for e in config.embeddings] == ["final_state", "mean_cnn_feature"]
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
    assert metrics["final"]["test"]["examples"] > 0
    folder = tmp_path / "logs" / "gru" / "test"
    assert not (folder / "sprite.png").exists()
    assert all(not e.sprite.image_path for e in _projector(folder).embeddings)
    note = _accumulator(folder).Tensors("projector/no_sprite")[-1]
    assert b"extracted before thumbnails were stored" in tf.make_ndarray(note.tensor_proto).item()


# --- Issue 16: images that do not mislead, drawn where they are looked at ----------------------------


def _pixels(png):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_classes_without_held_out_videos_are_grey_rows_not_zero_recall():
    from rnn import summaries

    names = ["Archery", "Basketball", "Biking"]
    grey = np.array([0xd9, 0xd9, 0xd9])
    with_all = _pixels(summaries.confusion_matrix_png([[3, 1, 0], [0, 4, 0], [0, 1, 2]], names, "all present"))
    missing = _pixels(summaries.confusion_matrix_png([[3, 1, 0], [0, 0, 0], [0, 1, 2]], names, "one missing"))
    grey_pixels = [int((image == grey).all(axis=2).sum()) for image in (with_all, missing)]
    cell = with_all.shape[0] * with_all.shape[1] / 4 / 4 / 4  # a sixteenth of the matrix's share of the image
    assert grey_pixels[0] < 0.02 * cell  # a few antialiased pixels at most
    assert grey_pixels[1] > 2 * cell  # a row of three grey cells
    # At 101 classes too, with most of them absent.
    confusion = np.zeros((101, 101), np.int64)
    confusion[np.arange(0, 101, 3), np.arange(0, 101, 3)] = 2
    big = _pixels(summaries.confusion_matrix_png(confusion, [f"class{i}" for i in range(101)], "101"))
    assert (big == grey).all(axis=2).sum() > 0


def test_pictures_of_700_classes_cost_what_60_do():
    """Issue 34 item 9: beyond 120 classes, the confusion matrix shows the 60
    most confused classes and the per-class chart the 60 of worst recall, so
    that a Kinetics-700 run draws pictures of bounded size (the whole 700 x 700
    matrix was 14,000 pixels a side: 221 s and 7.9 GB)."""
    from rnn import summaries

    rng = np.random.default_rng(0)
    confusion = np.diag(rng.integers(5, 10, 700))
    confused = [3, 50, 400, 699]  # classes whose videos are taken for others
    for i in confused:
        confusion[i, (i + 1) % 700] = 20
    names = [f"class{i}" for i in range(700)]
    image = _pixels(summaries.confusion_matrix_png(confusion, names, "700"))
    sixty = _pixels(summaries.confusion_matrix_png(confusion[:60, :60], names[:60], "60"))
    assert image.shape[0] <= 1.2 * sixty.shape[0] and image.shape[1] <= 1.2 * sixty.shape[1]
    shown = summaries.most_confused(confusion)
    assert len(shown) == 60 and set(confused) | {(i + 1) % 700 for i in confused} <= set(shown)
    per_class = {name: {"support": 7, "recall": 0.5 + i / 2000, "precision": 0.9} for i, name in enumerate(names)}
    chart = _pixels(summaries.per_class_png(per_class, "700"))
    assert chart.shape[0] <= (2.0 + 0.22 * 60 + 1) * 100


def test_clip_sheets_and_per_class_charts_fit_their_titles_at_any_size():
    from rnn import summaries

    jpeg = schema.thumbnail_jpeg(np.full((1, 224, 224, 3), 128, np.uint8))
    title = "step 300: 1 of 34 held-out clips misclassified (a long title that must not be cut at either end)"
    one = _pixels(summaries.thumbnails_png([(jpeg, "clip.avi\ntrue: a\npredicted: b (0.51)")], title))
    assert one.shape[1] >= 0.09 * len(title) * 100  # wide enough for the title (was 220 px)
    many = _pixels(summaries.thumbnails_png([(jpeg, "x")] * 24, title))
    assert many.shape[1] >= 6 * 200
    long_name = "Bruno_Walks_up_Stairs_-_Chicago_Dog_Training_-_We_can_teach_ANYTHING_to_a_dog!!!!_climb.mp4"
    short = summaries._shortened(long_name)
    assert len(short) == 30 and short.startswith("Bruno_Walks") and short.endswith("climb.mp4") and "\u2026" in short
    for classes in (1, 4, 29, 101):
        per_class = {f"class{i}": {"precision": 0.5, "recall": i / classes, "support": i % 3} for i in range(classes)}
        image = _pixels(summaries.per_class_png(per_class, "gru: test split, step 300, 34 videos, top-1 0.333"))
        shown = sum(1 for value in per_class.values() if value["support"])
        assert image.shape[0] >= 150 + 20 * shown


def test_images_are_drawn_of_the_models_the_run_may_export_and_no_other(tmp_path):
    """Scalars at every evaluation; images only where they are looked at,
    and only of models the run may export (issue 35 item 3: the last step's
    were drawn when the validation split had chosen an earlier one)."""
    from features import temporal_order_examples, write_extraction

    features = tmp_path / "features"
    # Random training labels: the validation split (carved from them) cannot
    # improve at every evaluation, so choosing draws the images less often.
    labels = np.random.default_rng(0).integers(0, 4, 32)
    noisy = [(frames, int(label), f"class{label}") for (frames, _, _), label in
             zip(temporal_order_examples(32, 12, 8), labels)]
    write_extraction(features, {"train": noisy,
                                "test": temporal_order_examples(12, 12, 8, seed=1)},
                     ["class0", "class1", "class2", "class3"], 12)
    training.train(training.TrainConfig(model=models.ModelConfig(units=16), train_pattern=str(features / "train-*.tfrecord"),
                                  eval_pattern=str(features / "test-*.tfrecord"), logdir=str(tmp_path / "logs"),
                                  steps=24, eval_every=2, log_every=2, batch_size=8, learning_rate=0.03,
                                  show_progress=False))
    validation = _accumulator(tmp_path / "logs" / "gru" / "validation")
    scores = {tag: [(event.step, float(tf.make_ndarray(event.tensor_proto))) for event in validation.Tensors(tag)]
              for tag in ("metrics/top1", "metrics/loss")}
    assert [step for step, _ in scores["metrics/top1"]] == list(range(2, 25, 2))
    # The validation split chooses: a lower loss than every evaluation before.
    losses = scores["metrics/loss"]
    improved = {step for i, (step, loss) in enumerate(losses) if all(loss < before for _, before in losses[:i])}
    drawn = {event.step for event in _accumulator(tmp_path / "logs" / "gru" / "test").Tensors("predictions/confusion_matrix")}
    assert drawn == improved  # each checkpoint chosen, titled as such; not the last step's unless chosen
    assert len(drawn) < len(losses)  # the point: not at every evaluation
    selected_step = [int(tf.make_ndarray(event.tensor_proto)) for event in validation.Tensors("metrics/selected_step")]
    assert selected_step[-1] == max(improved)
    # The exported model, the refit for that length, is drawn at its end, in refit/test.
    refit = _accumulator(tmp_path / "logs" / "gru" / "refit" / "test")
    assert {event.step for event in refit.Tensors("predictions/confusion_matrix")} == {max(improved)}


def test_runs_on_different_numbers_of_classes_share_a_top_k_column():
    # HParams leaves a run's cell blank where it lacks the column's tag: a
    # 4-class run (top-3) and a 29-class run (top-5) once shared no top-k.
    rng = np.random.default_rng(0)
    charted = {}
    for num_classes in (4, 29):
        logits, labels = rng.normal(size=(50, num_classes)), rng.integers(0, num_classes, 50)
        metrics = evaluation.metrics_from_logits(logits, labels, [f"c{i}" for i in range(num_classes)])
        ranked = np.argsort(-logits, axis=1)
        for k, value in metrics["top_ks"].items():
            assert value == pytest.approx(np.mean([label in row[:int(k)] for row, label in zip(ranked, labels)]))
        assert metrics["top_ks"][str(metrics["k"])] == metrics["top_k"]  # the one the log line reports
        charted[num_classes] = set(metrics["top_ks"])
    assert charted == {4: {"3"}, 29: {"3", "5"}}  # top-5 of 4 classes would always be 1
    assert evaluation.charted_ks(2) == [] and evaluation.charted_ks(3) == [2] and evaluation.charted_ks(5) == [3, 4]
