"""Files fetched once over HTTP(S) and checked against a pinned SHA-256.

A model file is named by its content: ``Artifact`` pins its size and
SHA-256 and lists where it is published. ``fetch`` tries those addresses in
order and keeps the first download whose bytes are the pinned ones; a
download is written under a hidden temporary name and renamed into place
only once it is whole and verified, so a cut-off or tampered download is
never taken for the model.
"""

import dataclasses
import hashlib
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

# Seconds without a byte before a download is given up (a server that
# stalls, or a network that drops packets silently).
TIMEOUT_SECONDS = 30
_CHUNK = 1 << 16


class DownloadError(Exception):
    """No address gave the pinned bytes; the message says, per host, what it gave."""


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A published file, pinned by content.

    Attributes:
      file_name: the name it is stored under.
      sha256: its SHA-256, hex.
      size: its size in bytes.
      urls: where it is published, tried in order.
    """

    file_name: str
    sha256: str
    size: int
    urls: tuple

    def matches(self, content):
        return len(content) == self.size and hashlib.sha256(content).hexdigest() == self.sha256


def fetch(artifact, destination, show_progress=True):
    """Downloads ``artifact`` to ``destination`` unless it is already there.

    Args:
      artifact: the ``Artifact``.
      destination: the file to create (its folder is made if needed).
      show_progress: a tqdm bar while downloading.

    Returns:
      The file's bytes (verified).

    Raises:
      DownloadError: no address answered with the pinned bytes (each
        address's failure is named).
    """
    destination = pathlib.Path(destination)
    if destination.is_file():
        content = destination.read_bytes()
        if artifact.matches(content):
            return content
    failures = {}  # what each address gave, said once per reason
    for url in artifact.urls:
        try:
            content = _download(url, artifact, show_progress)
        except (urllib.error.URLError, OSError, ValueError) as e:
            failures.setdefault(str(getattr(e, "reason", None) or e), []).append(url)
            continue
        if not artifact.matches(content):
            failures.setdefault(f"other bytes ({len(content)} bytes, SHA-256 "
                                f"{hashlib.sha256(content).hexdigest()[:12]}...)", []).append(url)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
        partial.write_bytes(content)
        os.replace(partial, destination)  # whole, or not there at all
        return content
    raise DownloadError("; ".join(f"{', '.join(_where(url) for url in urls)}: {reason}"
                                  for reason, urls in failures.items()))


def _where(url):
    """The host of ``url``, or the whole address for a local server (whose
    paths tell its files apart)."""
    parsed = urllib.parse.urlsplit(url)
    return url if parsed.hostname in ("127.0.0.1", "localhost") else parsed.hostname


def _download(url, artifact, show_progress):
    """The bytes at ``url`` (at most one more than the pinned size: a larger
    answer is not the file, and need not be read to the end)."""
    request = urllib.request.Request(url, headers={"User-Agent": "video-action-features"})
    chunks, received = [], 0
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response, \
            tqdm(total=artifact.size, unit="B", unit_scale=True, desc=f"downloading {artifact.file_name}",
                 disable=not show_progress, leave=False) as bar:
        while received <= artifact.size:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return b"".join(chunks)
