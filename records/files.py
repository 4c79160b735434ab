"""How the project writes, reads, locks and deletes its own files, on a local
disk or in object storage.

Rules every command follows (see README, "What is deleted"):

- a file appears whole or not at all: on a local (or shared POSIX) disk it is
  written under a hidden temporary name and renamed into place; in object
  storage (any ``scheme://`` path that TensorFlow's ``tf.io.gfile`` speaks:
  ``gs://``, ``s3://``, ``ram://``...), which has no rename, an object becomes
  visible only when its upload completes, so it is written (or uploaded from
  a local temporary file) straight to its final name;
- a folder that a run writes to is locked (``.lock``, an advisory lock the
  kernel drops when the process ends, even on kill -9); the lock file is
  never truncated or rewritten;
- a command deletes only files it can name as its own (listed in its
  manifest or run file, or matching a name only it writes), never a folder
  wholesale;
- a JSON file that cannot be parsed is reported with its path and what to do,
  not as a traceback.

Paths are strings (``pathlib`` would turn ``gs://b/x`` into ``gs:/b/x``).
Local paths never import TensorFlow, so quick commands stay quick.
"""

import contextlib
import errno
import fcntl
import fnmatch
import glob as glob_lib
import hashlib
import json
import os
import pathlib
import posixpath
import tempfile

from common import console

LOCK_NAME = ".lock"


class FolderBusy(Exception):
    """Another process holds the folder's lock."""


class UnreadableFile(ValueError):
    """A file of ours that exists but cannot be parsed (cut short, edited)."""


def is_remote(path):
    """True for object-storage paths (``scheme://...``)."""
    return "://" in str(path)


def _gfile():
    return console.import_tensorflow().io.gfile


def join(folder, *names):
    folder = str(folder)
    if is_remote(folder):
        return posixpath.join(folder, *names)
    return os.path.join(folder, *names)


def basename(path):
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(str(path))


def dirname(path):
    return posixpath.dirname(str(path)) if is_remote(path) else os.path.dirname(str(path))


def same_folder(first, second):
    """True if two folder paths name the same folder (relative or absolute)."""
    if is_remote(first) or is_remote(second):
        return str(first).rstrip("/") == str(second).rstrip("/")
    return os.path.abspath(first) == os.path.abspath(second)


def exists(path):
    return _gfile().exists(str(path)) if is_remote(path) else os.path.exists(path)


def size(path):
    """Bytes in a file."""
    return _gfile().stat(str(path)).length if is_remote(path) else os.path.getsize(path)


def sha256(path):
    """SHA-256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    with (_gfile().GFile(str(path), "rb") if is_remote(path) else open(path, "rb")) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_fingerprint(path, head=1 << 20):
    """What identifies a video file whatever its path: the SHA-256 of its
    first ``head`` bytes and its size (``"<hex>-<bytes>"``). The same clip
    extracted from two roots has one fingerprint."""
    with (_gfile().GFile(str(path), "rb") if is_remote(path) else open(path, "rb")) as f:
        digest = hashlib.sha256(f.read(head)).hexdigest()
    return f"{digest}-{size(path)}"


def glob(pattern):
    """Sorted paths matching a glob pattern (hidden names only if the pattern
    spells out their leading dot)."""
    if is_remote(pattern):
        return sorted(_gfile().glob(str(pattern)))
    return sorted(glob_lib.glob(str(pattern)))


def escape(name):
    """``name`` with glob wildcards escaped."""
    return glob_lib.escape(name)


GLOB_CHARACTERS = "*?["


def has_glob_characters(path):
    return any(character in str(path) for character in GLOB_CHARACTERS)


def matching(folder, name_pattern):
    """Sorted paths of the entries of ``folder`` whose names match
    ``name_pattern`` (hidden names only if it spells out their leading dot).

    The folder is listed, never globbed: a user's folder named ``g[1]`` or
    ``st*`` is that folder, not a pattern that reaches ``g1`` or ``stX``.
    A missing folder has no entries.
    """
    folder = str(folder)
    try:
        names = _gfile().listdir(folder) if is_remote(folder) else os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except Exception as error:  # tf.errors.NotFoundError for a remote folder
        if type(error).__name__ == "NotFoundError":
            return []
        raise
    names = [name.rstrip("/") for name in names]
    return sorted(join(folder, name) for name in names if fnmatch.fnmatchcase(name, name_pattern)
                  and (name_pattern.startswith(".") or not name.startswith(".")))


def check_folder_path(path, what):
    """Refuses, before anything is written, a local path where a folder is
    wanted but a file stands (at the path, or at one of its parents).

    Args:
      path: the folder (it may not exist yet).
      what: how the user named it (``"--output_dir"``), for the message.

    Raises:
      ValueError: one sentence naming the path and the file in the way.
    """
    if is_remote(path):
        return
    path = os.path.abspath(path)
    probe = path
    while not os.path.isdir(probe):
        if os.path.lexists(probe):
            kind = "a link to nowhere" if os.path.islink(probe) and not os.path.exists(probe) else "a file"
            where = "is" if probe == path else f"cannot be a folder: {probe} is"
            raise ValueError(f"{what} {path} {where} {kind}, not a folder")
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent


def makedirs(path):
    if is_remote(path):
        _gfile().makedirs(str(path))
    else:
        os.makedirs(path, exist_ok=True)


def remove(path):
    """Deletes a file if it exists."""
    if is_remote(path):
        if _gfile().exists(str(path)):
            _gfile().remove(str(path))
    else:
        pathlib.Path(path).unlink(missing_ok=True)


def read_bytes(path):
    """The content of a file, or None if it does not exist."""
    if is_remote(path):
        if not _gfile().exists(str(path)):
            return None
        with _gfile().GFile(str(path), "rb") as f:
            return f.read()
    try:
        return pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        return None


def read_text(path):
    """The text of a file, or None if it does not exist."""
    content = read_bytes(path)
    return None if content is None else content.decode("utf-8")


def partial_path(path, tag=None):
    """Hidden temporary name beside a local ``path`` (``.NAME.partial`` or ``.NAME.TAG.partial``)."""
    folder, name = os.path.split(str(path))
    return os.path.join(folder, f".{name}.{tag}.partial" if tag else f".{name}.partial")


def write_bytes_atomic(path, content):
    """Writes ``content`` to ``path`` so that readers see the old file or the
    new one, never a half-written one."""
    if is_remote(path):
        _replaceable(path)
        with _gfile().GFile(str(path), "wb") as f:  # the object appears when the upload completes
            f.write(content)
        return
    partial = partial_path(path, os.getpid())
    try:
        with open(partial, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:  # a full disk, a kill: no half-written file is left behind
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def write_text_atomic(path, text):
    """``write_bytes_atomic`` for text (UTF-8)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _replaceable(path):
    """Deletes an existing object before it is written again. Object stores
    replace an object on upload, but TensorFlow's ram:// filesystem (the
    tests' stand-in for gs://) appends to it; the object is briefly absent,
    which matters only for ``manifest.json`` and the TSVs, rewritten at the
    end of a run (shards and indexes are written once)."""
    if _gfile().exists(str(path)):
        _gfile().remove(str(path))


def upload(local_path, path):
    """Puts a finished local file at ``path``: a rename on a local disk, an
    upload (then the local file is deleted) in object storage."""
    if is_remote(path):
        _replaceable(path)
        _gfile().copy(str(local_path), str(path), overwrite=True)
        os.unlink(local_path)
    else:
        os.replace(local_path, path)


def scratch_file(path, tag):
    """Where to write a file that will become ``path``: beside it on a local
    disk (so that the final rename is atomic), in the local temporary folder
    for object storage."""
    if not is_remote(path):
        return partial_path(path, tag)
    descriptor, local = tempfile.mkstemp(prefix=f"{basename(path)}.{tag}.", suffix=".partial")
    os.close(descriptor)
    return local


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
    try:
        text = read_text(path)
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path} is not a text file; {remedy}") from None
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UnreadableFile(f"{path} is not valid JSON ({e.msg}: line {e.lineno}, column {e.colno}; "
                             f"cut short or edited?); {remedy}") from None


def _lock_path(folder):
    if not is_remote(folder):
        return os.path.join(folder, LOCK_NAME)
    # Object storage has no locks: lock a local file named after the URL,
    # which keeps out other runs on this machine (not on other machines).
    from common import cache

    locks = os.path.join(cache.cache_dir(), "locks")
    os.makedirs(locks, exist_ok=True)
    return os.path.join(locks, hashlib.sha256(str(folder).encode()).hexdigest()[:24] + LOCK_NAME)


@contextlib.contextmanager
def exclusive(folder, busy_message):
    """Holds ``folder``'s lock for the duration, so that two runs never write
    to one folder at once (nor while a reader holds it ``shared``).

    The file is opened without truncation: a refused run leaves it as it was.

    Raises:
      FolderBusy: another process holds the lock (``busy_message``).
    """
    descriptor = os.open(_lock_path(folder), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(descriptor, fcntl.LOCK_EX, busy_message)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def shared(folder, busy_message):
    """Holds ``folder``'s lock shared for the duration: readers (training
    runs) side by side, no writer (an extraction, ``--overwrite``) until the
    last of them ends. A folder this user cannot write to cannot be
    rewritten by this user either, and is read without a lock.

    Raises:
      FolderBusy: a writer holds the lock (``busy_message``).
    """
    path = _lock_path(folder)
    try:
        descriptor = os.open(path, os.O_RDONLY if os.path.exists(path) else os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if error.errno not in console.UNWRITABLE:
            raise
        yield
        return
    try:
        _lock(descriptor, fcntl.LOCK_SH, busy_message)
        yield
    finally:
        os.close(descriptor)


def _lock(descriptor, kind, busy_message):
    try:
        fcntl.flock(descriptor, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderBusy(busy_message) from None


def relative_files(folder):
    """``/``-separated paths, relative to a local ``folder``, of every file
    and link below it (links to folders are listed, not followed), sorted."""
    found = []
    for parent, subfolders, names in os.walk(folder):
        links = [name for name in subfolders if os.path.islink(os.path.join(parent, name))]
        for name in names + links:
            found.append(os.path.relpath(os.path.join(parent, name), folder).replace(os.sep, "/"))
    return sorted(found)


def delete_own_files(folder, relative_names):
    """Deletes the named files below ``folder`` (those that exist), then the
    local subfolders that this left empty; nothing else.

    Args:
      folder: the folder.
      relative_names: ``/``-separated paths relative to ``folder`` of files
        the project wrote.

    Returns:
      The relative names actually deleted.

    Raises:
      ValueError: a name leads outside ``folder``, or (on a local disk) is not
        a plain file (a folder, a link to elsewhere): never followed.
    """
    deleted, parents = [], set()
    for name in sorted(set(relative_names)):
        parts = pathlib.PurePosixPath(name)
        path = join(folder, name)
        if ".." in parts.parts or parts.is_absolute():
            raise ValueError(f"refusing to delete {path}: outside {folder}")
        if is_remote(folder):
            if exists(path):
                remove(path)
                deleted.append(name)
            continue
        if not os.path.lexists(path):
            continue
        if os.path.islink(path) or not os.path.isfile(path):
            raise ValueError(f"refusing to delete {path}: not a regular file written by this project")
        os.unlink(path)
        deleted.append(name)
        parents.update(str(p) for p in parts.parents if str(p) != ".")
    for parent in sorted(parents, key=lambda p: p.count("/"), reverse=True):
        with contextlib.suppress(OSError):  # not empty: it holds something that is not ours
            os.rmdir(join(folder, parent))
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
    table = [[unescape_tsv(value) for value in line.split("\t")] for line in read_text(path).splitlines()]
    return table[0], table[1:]
