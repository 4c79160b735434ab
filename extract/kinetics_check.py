"""What the video CNN saw: Kinetics-600 top-5 of each video's features.

    python -m extract.kinetics_check 'features/*.tfrecord'

A quick check that stored ``movinet_a0_stream`` features are real Kinetics
features (and that frame order, colour and cropping are right): for each
video, the mean of its real frames' features goes through the model's own
600-class head, as the model does at a video's last frame, and the five most
likely Kinetics-600 actions are printed. A golf clip should say "golf driving", a
pull-up clip "pull ups", an archery clip "archery". For shards extracted by
``movinet_a0_stream`` (``extract.imagenet_check`` does the same for the
image CNNs).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from extract import imagenet_check, movinet  # noqa: E402
from records import files, manifest as manifest_lib, schema  # noqa: E402
from records.inspect import iterate_videos  # noqa: E402
from records.reader import list_files  # noqa: E402


def kinetics_top_classes(pattern, top=5):
    """Returns ``{video_id: [(class index, class name, probability), ...]}``.

    Raises:
      ValueError: no matching shards, shards not made by ``movinet_a0_stream``
        (according to their manifest), or its model missing from their folder.
    """
    folder = files.dirname(list_files(pattern)[0])
    manifest = manifest_lib.read_manifest(folder) or {}
    if manifest.get("backbone") != movinet.NAME or "model" not in manifest:
        raise ValueError(f"these shards were not made by {movinet.NAME} (manifest: {manifest.get('backbone')}); "
                         "python -m extract.imagenet_check checks image CNN features")
    model = manifest_lib.read_model(folder, manifest["model"])
    if model is None:
        raise ValueError(f"{files.join(folder, manifest_lib.MODEL_NAME)} is missing or is not the model its manifest "
                         "names; run the same python -m extract command again to restore it")
    classify = movinet.kinetics_classifier(model)
    labels = movinet.kinetics_labels()
    result = {}
    for video in iterate_videos(pattern):
        logits = classify(video[schema.FEATURES][:video[schema.NUM_FRAMES]])
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = np.argsort(-probabilities)[:top]
        result[video[schema.VIDEO_ID]] = [(int(i), labels[i], float(probabilities[i])) for i in best]
    return dict(sorted(result.items()))


if __name__ == "__main__":
    sys.exit(imagenet_check.main(sys.argv, kinetics_top_classes, __doc__))
