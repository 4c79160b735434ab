"""``manifest.json``: what an output folder holds and how it was made.

The extractor writes it when a run starts (``"complete": false``, with the
settings, so a later run can tell whether it may resume) and again when the
run ends. Readers check it against what a model expects.
"""

import json
import os
import pathlib

MANIFEST_NAME = "manifest.json"
# The entries that decide what stored features mean. Two sets of features can
# be used together (a resumed extraction, training and evaluation shards, a
# model and the videos it labels) only if these agree.
FEATURE_KEYS = ("backbone", "weights", "weights_sha256", "image_size", "feature_dim", "fps", "seconds",
                "max_frames", "class_names")


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


def write_text_atomic(path, text):
    """Writes ``text`` to ``path`` so that readers see the old file or the new
    one, never a half-written one."""
    path = pathlib.Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def write_json_atomic(path, obj):
    """Writes ``obj`` as indented JSON, atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def manifest_path(output_dir):
    return pathlib.Path(output_dir) / MANIFEST_NAME


def read_manifest(output_dir):
    """Returns the manifest of ``output_dir`` as a dict, or None if it has none."""
    path = manifest_path(output_dir)
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_manifest(output_dir, manifest):
    write_json_atomic(manifest_path(output_dir), manifest)
