"""``manifest.json``: what an output folder holds and how it was made.

The extractor writes it when a run starts (``"complete": false``, with the
settings, so a later run can tell whether it may resume) and again when the
run ends. Readers check it against what a model expects.
"""

from records import files

MANIFEST_NAME = "manifest.json"
# The exact quantized CNN of an int8 extraction, beside its manifest (whose
# "model" entry holds its SHA-256), and in each training run made from it.
MODEL_NAME = "backbone.tflite"
# The entries that decide what stored features mean. Two sets of features can
# be used together (a resumed extraction, training and evaluation shards, a
# model and the videos it labels) only if these agree.
FEATURE_KEYS = ("backbone", "weights", "weights_sha256", "precision", "image_size", "feature_dim", "fps",
                "seconds", "max_frames", "class_names")
# What entries that older versions did not write (or wrote differently) mean:
# before int8, the recorded precision was the --precision flag itself, and
# "auto" (or nothing) meant float32 features (LiteRT or TensorFlow on a CPU;
# on a GPU, float16 compute within 1 % of them).
_LEGACY_PRECISIONS = (None, "auto")


def with_legacy_defaults(settings):
    """A manifest (or a run's record of one) with the entries of older
    versions read as what they meant."""
    if settings.get("precision") in _LEGACY_PRECISIONS:
        return {**settings, "precision": "float32"}
    return settings


def describe_differences(first, second, keys, first_name, second_name):
    """Says how two manifests (or settings dicts) differ on ``keys``.

    Returns:
      "" if they agree, else e.g. ``"fps: 2.0 there, 3.0 now; the class names
      differ"``.
    """
    different = [key for key in keys if first.get(key) != second.get(key)]
    parts = [f"{key}: {first.get(key)!r} {first_name}, {second.get(key)!r} {second_name}"
             for key in different if key != "class_names"]
    if "class_names" in different:
        parts.append("the class names differ")
    return "; ".join(parts)


def installed_versions(packages):
    """``{package: version}`` of those of ``packages`` that are installed."""
    import importlib.metadata

    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def read_model(folder, entry):
    """The ``MODEL_NAME`` file in ``folder`` if it is the one ``entry`` (a
    manifest's "model") names, else None (missing, or other bytes)."""
    import hashlib

    content = files.read_bytes(files.join(folder, MODEL_NAME))
    if content is None or hashlib.sha256(content).hexdigest() != entry["sha256"]:
        return None
    return content


def manifest_path(output_dir):
    return files.join(output_dir, MANIFEST_NAME)


# Entries every manifest written by ``python -m extract`` has, from the start
# of a run: a JSON file without them is not ours.
_REQUIRED_KEYS = ("backbone", "feature_dim", "max_frames", "dtype", "class_names", "complete")


def read_manifest(output_dir):
    """Returns the manifest of ``output_dir`` as a dict, or None if it has none.

    Raises:
      files.UnreadableFile: ``manifest.json`` is cut short, edited into
        invalid JSON, or is some other program's file.
    """
    path = manifest_path(output_dir)
    remedy = ("restore it from a backup, or extract again into another --output_dir "
              "(the shards of this folder cannot be used or resumed without it)")
    manifest = files.read_json(path, remedy)
    if manifest is None:
        return None
    missing = [key for key in _REQUIRED_KEYS if key not in manifest] if isinstance(manifest, dict) else ["all"]
    if missing:
        raise files.UnreadableFile(f"{path} is not a manifest written by python -m extract (it lacks "
                                   f"{', '.join(missing)} of its entries); {remedy}")
    return with_legacy_defaults(manifest)


def write_manifest(output_dir, manifest):
    files.write_json_atomic(manifest_path(output_dir), manifest)
