"""How the project writes, reads, locks and deletes its own files.

Rules every command follows (see README, "What is deleted"):

- a file is written under a hidden temporary name and renamed into place, so
  a reader sees the old file or the new one, never half of one;
- a folder that a run writes to is locked (``.lock``, an advisory lock the
  kernel drops when the process ends, even on kill -9); the lock file is
  never truncated or rewritten;
- a command deletes only files it can name as its own (listed in its
  manifest or run file, or matching a name only it writes), never a folder
  wholesale;
- a JSON file that cannot be parsed is reported with its path and what to do,
  not as a traceback.
"""

import contextlib
import errno
import fcntl
import json
import os
import pathlib

LOCK_NAME = ".lock"


class FolderBusy(Exception):
    """Another process holds the folder's lock."""


class UnreadableFile(ValueError):
    """A file of ours that exists but cannot be parsed (cut short, edited)."""


def partial_path(path, tag=None):
    """Hidden temporary name beside ``path`` (``.NAME.partial`` or ``.NAME.TAG.partial``)."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.{tag}.partial" if tag else f".{path.name}.partial")


def write_text_atomic(path, text):
    """Writes ``text`` to ``path`` so that readers see the old file or the new
    one, never a half-written one."""
    path = pathlib.Path(path)
    partial = partial_path(path, os.getpid())
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def write_json_atomic(path, obj):
    """Writes ``obj`` as indented JSON, atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path, remedy):
    """Parses a JSON file of ours.

    Args:
      path: the file.
      remedy: what the user should do if it is unreadable (one sentence).

    Returns:
      The parsed object, or None if the file does not exist.

    Raises:
      UnreadableFile: the file exists but is not valid UTF-8 JSON; the message
        names it and says ``remedy``.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path} is not a text file; {remedy}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UnreadableFile(f"{path} is not valid JSON ({e.msg}: line {e.lineno}, column {e.colno}; "
                             f"cut short or edited?); {remedy}") from None


@contextlib.contextmanager
def exclusive(folder, busy_message):
    """Holds ``folder/.lock`` for the duration, so that two runs never write to
    one folder at once.

    The file is opened without truncation: a refused run leaves it as it was.

    Raises:
      FolderBusy: another process holds the lock (``busy_message``).
    """
    descriptor = os.open(pathlib.Path(folder) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(busy_message) from None
        yield
    finally:
        os.close(descriptor)


def delete_own_files(folder, relative_names):
    """Deletes the named files below ``folder`` (those that exist), then the
    subfolders that this left empty; nothing else.

    Args:
      folder: the folder.
      relative_names: paths relative to ``folder`` of files the project wrote.

    Returns:
      The relative names actually deleted.

    Raises:
      ValueError: a name leads outside ``folder`` or is not a plain file (a
        folder, a link to elsewhere): never followed.
    """
    folder = pathlib.Path(folder)
    deleted, parents = [], set()
    for name in sorted(set(relative_names)):
        path = folder / name
        if ".." in pathlib.PurePath(name).parts or pathlib.PurePath(name).is_absolute():
            raise ValueError(f"refusing to delete {path}: outside {folder}")
        if not os.path.lexists(path):
            continue
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"refusing to delete {path}: not a regular file written by this project")
        path.unlink()
        deleted.append(name)
        parents.update(p for p in pathlib.PurePath(name).parents if str(p) != ".")
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: it holds something that is not ours
            (folder / parent).rmdir()
    return deleted


def is_disk_full(error):
    """True for the errors a full disk (or quota) raises, in Python or in TensorFlow."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    message = str(getattr(error, "message", error))
    return "No space left on device" in message or "Disk quota exceeded" in message


# TSV files: one record per line, tab-separated. Values are escaped rather
# than altered, so that every value (a video id with a tab, a newline or a
# backslash in it) reads back exactly as written.
_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_TSV_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def escape_tsv(value):
    return "".join(_TSV_ESCAPES.get(character, character) for character in str(value))


def unescape_tsv(text):
    out, characters = [], iter(text)
    for character in characters:
        out.append(_TSV_UNESCAPES.get(next(characters, ""), "") if character == "\\" else character)
    return "".join(out)


def write_tsv(path, header, rows):
    """Writes a TSV file atomically, escaping backslash, tab, newline and CR
    as ``\\\\``, ``\\t``, ``\\n``, ``\\r``."""
    lines = ["\t".join(escape_tsv(value) for value in row) for row in [header, *rows]]
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_tsv(path):
    """Reads a TSV file written by ``write_tsv``: ``(header, rows)``."""
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    table = [[unescape_tsv(value) for value in line.split("\t")] for line in lines]
    return table[0], table[1:]
