"""Makes the README's pictures: TensorBoard's views of real runs, in headless Chromium.

    python docs/screenshots.py            # about 5 minutes; needs Chromium (Debian: apt install chromium)

1. Extracts the demo and trains three runs on it (``gru``, ``lstm`` and
   ``gru_lr0.01``, which differs from ``gru`` only in its learning rate),
   and, in a logdir of its own, one run on synthetic features of UCF-101's
   101 classes whose held-out split lacks 30 of them.
2. Starts TensorBoard on those runs and takes, in headless Chromium at 1600
   px wide: the landing view (Time Series) and the HParams table as they
   first open, and the Images tab filtered on each image (confusion matrix,
   per-class chart, misclassified clips).
3. Writes the 101-class confusion matrix as TensorBoard stores it, full size.

Everything goes to ``docs/`` (and a work folder that is deleted at the end).
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]
# UCF-101's class names (classInd.txt), for the 101-class run.
UCF101 = ("ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch Basketball "
          "BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles BodyWeightSquats Bowling "
          "BoxingPunchingBag BoxingSpeedBag BreastStroke BrushingTeeth CleanAndJerk CliffDiving CricketBowling "
          "CricketShot CuttingInKitchen Diving Drumming Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch "
          "FrontCrawl GolfSwing Haircut Hammering HammerThrow HandstandPushups HandstandWalking HeadMassage "
          "HighJump HorseRace HorseRiding HulaHoop IceDancing JavelinThrow JugglingBalls JumpingJack JumpRope "
          "Kayaking Knitting LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks ParallelBars "
          "PizzaTossing PlayingCello PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar "
          "PlayingTabla PlayingViolin PoleVault PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor "
          "RopeClimbing Rowing SalsaSpin ShavingBeard Shotput SkateBoarding Skiing Skijet SkyDiving "
          "SoccerJuggling SoccerPenalty StillRings SumoWrestling Surfing Swing TableTennisShot TaiChi "
          "TennisSwing ThrowDiscus TrampolineJumping Typing UnevenBars VolleyballSpiking WalkingWithDog "
          "WallPushups WritingOnBoard YoYo").split()


def _run(*command):
    subprocess.run([str(part) for part in command], cwd=REPO, check=True)


def _train(features, logdir, *extra):
    _run(sys.executable, "train.py", "--train_pattern", features / "train-*.tfrecord", "--eval_pattern",
         features / "test-*.tfrecord", "--logdir", logdir, "--progress=false", *extra)


def _synthetic_101(folder):
    """Features of 101 classes (a noisy direction per class, a drift over
    time), 6 training videos per class, held-out videos for 70 of them."""
    sys.path.insert(0, str(REPO))
    from records import manifest, schema, writer

    rng = np.random.default_rng(0)
    directions = rng.normal(size=(101, 32)).astype(np.float32)
    folder.mkdir(parents=True)
    splits = {}
    for split, per_class, classes in (("train", 6, range(101)), ("test", 2, range(0, 101, 1))):
        shard = writer.ShardWriter(folder, writer.shard_name(split, 0, 1))
        count = 0
        for label in classes:
            if split == "test" and label % 10 in (3, 7, 9):  # 31 classes without held-out videos
                continue
            for i in range(per_class):
                frames = directions[label] + rng.normal(scale=1.2, size=(20, 32)).astype(np.float32)
                group = i if split == "train" else 10 + i  # held-out videos of groups never trained on
                video_id = f"{UCF101[label]}/v_{UCF101[label]}_g{group:02d}_c01.avi"
                shard.write(schema.encode_video(video_id, label, UCF101[label], frames, 20, 5.0, "float32"),
                            video_id, label, 20)
                count += 1
        shard.commit()
        splits[split] = {"videos": count, "failed": 0, "frames": 20 * count, "shards": [shard.name]}
    manifest.write_manifest(folder, {"complete": True, "backbone": "synthetic", "weights": "none",
                                     "precision": "float32", "image_size": 224, "feature_dim": 32, "fps": 5.0,
                                     "seconds": 4.0, "max_frames": 20, "dtype": "float32", "class_names": UCF101,
                                     "splits": splits})


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _screenshot(url, path, height, chromium):
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size=1600,{height}",
                        "--virtual-time-budget=20000", f"--screenshot={path}", url], check=True,
                       capture_output=True, timeout=180)
    print(f"wrote {path.relative_to(REPO)}")


def main():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("Chromium is needed: apt install chromium")
    work = pathlib.Path(tempfile.mkdtemp(prefix="screenshots_"))
    try:
        _run(sys.executable, "-m", "extract", "--demo", "--videos", work / "videos", "--output_dir",
             work / "features", "--progress=false")
        logdir = work / "logs"
        for run, extra in (("gru", []), ("lstm", ["--cell", "lstm"]), ("gru_lr0.01", ["--learning_rate", "0.01"])):
            _train(work / "features", logdir, "--run_name", run, "--steps", "300", *extra)
        _synthetic_101(work / "ucf101")
        _train(work / "ucf101", work / "logs101", "--run_name", "ucf101_synthetic", "--steps", "150", "--units",
               "64")

        port = _free_port()
        board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port",
                                  str(port), "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{base}/data/runs", timeout=5)
                    break
                except OSError:
                    time.sleep(1)
            _screenshot(f"{base}/?darkMode=false#timeseries", DOCS / "tensorboard_time_series.png", 900, chromium)
            _screenshot(f"{base}/?darkMode=false#hparams", DOCS / "tensorboard_hparams.png", 700, chromium)
            for tag, name, height in (("confusion", "tensorboard_confusion_matrix.png", 1000),
                                      ("per_class", "tensorboard_per_class.png", 1000),
                                      ("misclassified", "tensorboard_misclassified_clips.png", 800)):
                _screenshot(f"{base}/?darkMode=false#images&tagFilter={tag}", DOCS / name, height, chromium)
        finally:
            board.terminate()
            board.wait(timeout=60)

        from tensorboard.backend.event_processing import event_accumulator

        events = event_accumulator.EventAccumulator(str(work / "logs101" / "ucf101_synthetic" / "test"),
                                                    size_guidance={"tensors": 0})
        events.Reload()
        png = events.Tensors("predictions/confusion_matrix")[-1].tensor_proto.string_val[2]
        (DOCS / "confusion_matrix_101.png").write_bytes(png)
        print("wrote docs/confusion_matrix_101.png")
        print(json.dumps({run: json.loads((logdir / run / "metrics.json").read_text())["exported"]["test"]["top1"]
                          for run in ("gru", "lstm", "gru_lr0.01")}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
