"""Fetching dataset files from a list of mirrors, with md5 verification and atomic writes.

A file is downloaded whole into memory, its md5 compared with the published one, and only then written
(atomically) into the data directory, so the directory never holds a partial or unverified download. Files
already present are trusted; the parser validates them when they are read.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from lib.errors import UserError
from lib.results import atomic_write_bytes

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30
_CHUNK = 1 << 20


def find_local(directory: Path, filename: str) -> Path | None:
    """``directory/filename``, else the same name without ``.gz`` (a user may have decompressed it)."""
    candidates = [directory / filename]
    if filename.endswith(".gz"):
        candidates.append(directory / filename.removesuffix(".gz"))
    return next((p for p in candidates if p.is_file()), None)


def _read_url(url: str, label: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        buf = bytearray()
        # disable=None: a bar on a terminal, nothing in a run's log file.
        with tqdm(
            total=int(length) if length else None,
            unit="B",
            unit_scale=True,
            desc=label,
            leave=False,
            disable=None,
        ) as bar:
            while chunk := response.read(_CHUNK):
                buf += chunk
                bar.update(len(chunk))
    return bytes(buf)


def download(filename: str, directory: Path, mirrors: Sequence[str], md5: str) -> Path:
    """Fetch ``filename`` from the first mirror serving it with the right md5, into ``directory``.

    Returns the written path. Raises :class:`UserError` (listing each URL and why it failed) when no mirror
    delivers a verified copy.
    """
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        logger.info("downloading %s", url)
        try:
            data = _read_url(url, filename)
        except (OSError, http.client.HTTPException, ValueError) as e:
            # OSError covers URLError, HTTPError, timeouts and resets; HTTPException a cut-off response;
            # ValueError a malformed mirror URL.
            reason = str(getattr(e, "reason", None) or e)
            logger.warning("could not download %s: %s", url, reason)
            failures.append(f"{url}: {reason}")
            continue
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if got != md5:
            logger.warning("%s has md5 %s, expected %s; trying the next mirror", url, got, md5)
            failures.append(f"{url}: md5 {got} != expected {md5}")
            continue
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / filename
        atomic_write_bytes(path, data)
        logger.info("wrote %s (%d bytes, md5 verified)", path, len(data))
        return path
    tried = "; ".join(failures).replace("\n", " ") or "no mirrors configured"
    raise UserError(f"could not download {filename} ({tried})")


def ensure_files(
    directory: Path,
    filenames: Sequence[str],
    mirrors: Sequence[str],
    md5s: Mapping[str, str],
    dataset: str,
    hint: str = "",
) -> list[Path]:
    """Paths of ``filenames`` in ``directory``, downloading (and md5-verifying) the ones that are missing.

    When a download fails the :class:`UserError` says which file, from where, and exactly where to put the
    files by hand.
    """
    paths = []
    for filename in filenames:
        path = find_local(directory, filename)
        if path is None:
            try:
                path = download(filename, directory, mirrors, md5s[filename])
            except UserError as e:
                where = directory.resolve()
                raise UserError(
                    f"{dataset}: {e}; download {', '.join(filenames)} by hand into {where}/{hint} and re-run"
                ) from None
        paths.append(path)
    return paths


def fetch(url: str, path: Path, hint: str) -> Path:
    """Stream ``url`` into ``path`` (for files too large to hold in memory), atomically: a temporary file in
    the same directory is renamed into place only when the transfer completed with the advertised length.
    ``path`` already present is trusted. A failure is one :class:`UserError` naming the URL, the reason and
    ``hint`` (where to put the file by hand)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            size = 0
            with tqdm(
                total=int(length) if length else None,
                unit="B",
                unit_scale=True,
                desc=path.name,
                leave=False,
                disable=None,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            if length and size != int(length):
                raise http.client.IncompleteRead(b"", int(length) - size)
        tmp.replace(path)
    except (OSError, http.client.HTTPException, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = str(getattr(e, "reason", None) or e).splitlines()[0]
        raise UserError(f"could not download {url} ({reason}); {hint}") from None
    logger.info("wrote %s", path)
    return path
