"""Resumable, verified downloads of the manifest's files.

A Pi fetches gigabytes over Wi-Fi onto an SD card, so a download must survive
interruption (it retries with backoff, resuming from ``FILENAME.part``, and a re-run
after it gave up resumes too), must never leave a half file under the final name (the
final name appears only by an atomic rename after the size and sha256 check), and
must refuse bytes whose sha256 differs from the manifest. A file under its final name
is therefore complete, which lets :func:`~.manifest.resolve` stay cheap.

Beside every downloaded file a ``FILENAME.sha256`` sidecar records the hash computed
while downloading. It lets a re-run skip files without re-reading gigabytes, and it is
the reference for entries whose manifest sha256 is empty (no published value).
:func:`~.verify.verify` always re-hashes.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import random
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ModelFileError
from ..progress import Progress
from .manifest import DOWNLOAD_COMMAND, MODELS_DIR_ENV, ModelFile, human_size
from .verify import Hasher, hash_into, judge_hash, part_path, record_hash, recorded_hash, sha256_file, sidecar

logger = logging.getLogger(__package__)

BASE_URL_ENV = "EDGE_ASSISTANT_MODELS_BASE_URL"
CHUNK_BYTES = 1 << 20

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


@dataclass(frozen=True)
class DownloadPolicy:
    """How a download rides out a Wi-Fi drop or a busy server before it gives up.

    After a failed attempt it waits ``first_wait_s``, doubling up to ``max_wait_s``,
    each wait shortened by up to ``jitter`` of itself so that devices cut off together
    do not return in step; a server's Retry-After is honoured up to ``max_wait_s``. It
    gives up after ``attempts`` failed attempts, counted afresh whenever data arrives,
    so a long download survives any number of drops it recovers from. ``timeout_s``
    bounds the connect and every read: a stalled connection becomes a retry, not a hang.
    """

    attempts: int = 8
    first_wait_s: float = 1.0
    max_wait_s: float = 30.0
    jitter: float = 0.25
    timeout_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def wait_s(self, failures: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt in a row."""
        backoff = min(self.max_wait_s, self.first_wait_s * 2 ** (failures - 1))
        backoff *= 1 - self.jitter * random.random()
        return min(self.max_wait_s, max(backoff, retry_after_s or 0.0))


# The default for download(): 8 attempts wait 1+2+4+8+16+30+30 s (less jitter) for the
# link to come back, enough for a Wi-Fi re-association or a router restart.
DOWNLOAD_POLICY = DownloadPolicy()


def download(
    files: Sequence[ModelFile],
    dest_dir: Path,
    progress: bool = True,
    base_url_override: str | None = None,
    policy: DownloadPolicy | None = None,
) -> list[Path]:
    """Fetch missing or invalid files into ``dest_dir``; return their final paths.

    ``base_url_override`` (else $EDGE_ASSISTANT_MODELS_BASE_URL) replaces each URL by
    BASE/filename, for a local mirror. An interrupted transfer is retried and resumed
    as ``policy`` (default :data:`DOWNLOAD_POLICY`) says. Raises ModelFileError with
    one line on any failure; an interrupted transfer keeps its ``.part`` so a re-run
    resumes.
    """
    dest = Path(dest_dir)
    base_url = base_url_override or os.environ.get(BASE_URL_ENV) or None
    policy = DOWNLOAD_POLICY if policy is None else policy
    pending = [file for file in files if not _already_valid(file, dest)]
    if pending:
        _prepare_dir(dest, pending)
    for file in pending:
        _download_one(file, dest, _source_url(file, base_url), progress, policy)
    return [file.path(dest) for file in files]


def _already_valid(file: ModelFile, dest_dir: Path) -> bool:
    """True for a complete file, trusting a sidecar newer than the file to skip hashing."""
    path = file.path(dest_dir)
    if not path.is_file():
        return False
    if path.stat().st_size != file.size:
        logger.warning("%s: wrong size; downloading it again", file.filename)
        return False
    recorded = recorded_hash(path)
    sidecar_fresh = recorded is not None and sidecar(path).stat().st_mtime >= path.stat().st_mtime
    if sidecar_fresh and (not file.sha256 or recorded == file.sha256):
        logger.info("%s: present, verified at download", file.filename)
        return True
    actual = sha256_file(path)
    result = judge_hash(file, path, actual)
    if not result.ok:
        logger.warning("%s: %s; downloading it again", file.filename, result.detail)
        return False
    record_hash(path, actual)
    logger.info("%s: present, %s", file.filename, result.status.value)
    return True


def _prepare_dir(dest_dir: Path, pending: Sequence[ModelFile]) -> None:
    """Fail before the first byte if the directory is unusable or the disk too small."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelFileError(f"cannot create models directory {dest_dir}: {e.strerror}") from e
    if not os.access(dest_dir, os.W_OK):
        raise ModelFileError(
            f"cannot write to {dest_dir}: choose another with --dir or ${MODELS_DIR_ENV}"
        )
    needed = sum(file.size - _part_size(part_path(file.path(dest_dir))) for file in pending)
    free = shutil.disk_usage(dest_dir).free
    if needed > free:
        raise ModelFileError(
            f"downloading needs {human_size(needed)} but only {human_size(free)} is free in {dest_dir}"
        )


def _part_size(part: Path) -> int:
    return part.stat().st_size if part.is_file() else 0


def _source_url(file: ModelFile, base_url: str | None) -> str:
    if base_url is None:
        return file.url
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(file.filename)}"


def _download_one(file: ModelFile, dest_dir: Path, url: str, progress: bool, policy: DownloadPolicy) -> None:
    final = file.path(dest_dir)
    part = part_path(final)
    actual = _fetch(file, url, part, progress, policy).hexdigest()
    if file.sha256 and actual != file.sha256:
        part.unlink(missing_ok=True)
        raise ModelFileError(
            f"{file.filename}: sha256 mismatch, expected {file.sha256}, got {actual}; "
            f"the download was discarded (from {url})"
        )
    if file.md5 and (md5 := hash_into(hashlib.md5(), part).hexdigest()) != file.md5:
        part.unlink(missing_ok=True)
        raise ModelFileError(
            f"{file.filename}: md5 mismatch, expected {file.md5} (published), got {md5}; "
            f"the download was discarded (from {url})"
        )
    os.replace(part, final)
    record_hash(final, actual)
    if file.sha256:
        logger.info("%s: downloaded, sha256 verified", file.filename)
    elif file.md5:
        logger.info("%s: downloaded, published md5 verified, sha256 %s recorded", file.filename, actual)
    else:
        logger.warning(
            "%s: downloaded; no published sha256, recorded %s in %s",
            file.filename, actual, sidecar(final).name,
        )


class _Interrupted(Exception):
    """A transfer stopped for a reason that may pass (network, busy server): worth another attempt."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class _PartDigest:
    """sha256 of the bytes in the ``.part`` file, kept across attempts so that a retry
    continues the hash instead of re-reading gigabytes from the SD card."""

    def __init__(self, part: Path) -> None:
        self._part = part
        self._hasher = hashlib.sha256()
        self._size = 0

    def cover(self, offset: int) -> None:
        """Make the digest cover the first ``offset`` bytes, the part file's whole content."""
        if offset == self._size:
            return
        self._hasher, self._size = hashlib.sha256(), 0
        if offset:
            try:
                hash_into(self, self._part)
            except OSError as e:
                raise ModelFileError(f"cannot read {self._part}: {e.strerror}") from e

    def update(self, data: bytes, /) -> None:
        self._hasher.update(data)
        self._size += len(data)

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


def _fetch(file: ModelFile, url: str, part: Path, progress: bool, policy: DownloadPolicy) -> _PartDigest:
    """Bring ``part`` to ``file.size`` bytes, retrying interruptions; return its digest."""
    digest = _PartDigest(part)
    failures = 0
    while True:
        before = _part_size(part)
        try:
            _attempt(file, url, part, digest, progress, policy.timeout_s)
            return digest
        except _Interrupted as stop:
            received = _part_size(part)
            failures = 1 if received > before else failures + 1
            if failures >= policy.attempts:
                raise ModelFileError(
                    f"download of {file.filename} stopped at {received} of {file.size} bytes "
                    f"({stop.reason}) after {failures} attempt{'s' if failures > 1 else ''}; "
                    f"re-run `{DOWNLOAD_COMMAND}` to resume"
                ) from stop
            wait = policy.wait_s(failures, stop.retry_after_s)
            logger.warning(
                "download of %s interrupted at %s of %s (%s); retry %d/%d in %.3g s",
                file.filename, human_size(received), human_size(file.size), stop.reason,
                failures, policy.attempts - 1, wait,
            )
            policy.sleep(wait)


def _attempt(
    file: ModelFile, url: str, part: Path, digest: _PartDigest, progress: bool, timeout_s: float
) -> None:
    """One request towards a complete ``part``, resuming from its size.

    Raises _Interrupted for what is worth another attempt and ModelFileError for what
    is final (a missing file, a server contradicting the manifest, a disk error).
    """
    offset = _part_size(part)
    if offset > file.size:
        logger.warning("%s: partial file is larger than expected; starting over", file.filename)
        offset = 0
    if offset == file.size:
        digest.cover(offset)
        return
    try:
        with urllib.request.urlopen(_request(url, offset), timeout=timeout_s) as response:
            offset = _accepted_offset(file, response, offset)
            digest.cover(offset)
            verb = f"resuming at {human_size(offset)} of" if offset else "downloading"
            meter = Progress(
                file.filename, file.size, offset, f"{verb} {human_size(file.size)}", human_size, enabled=progress
            )
            received = _stream(file, response, part, offset, digest, meter)
    except urllib.error.HTTPError as e:
        if e.code == 429 or e.code >= 500:
            reason = f"HTTP {e.code} {e.reason} from {url}"
            raise _Interrupted(reason, _retry_after_s(e.headers.get("Retry-After"))) from e
        raise _http_error(file, url, part, e) from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _Interrupted(_reason(e, timeout_s)) from e
    if received < file.size:
        raise _Interrupted("connection closed early")


def _http_error(file: ModelFile, url: str, part: Path, error: urllib.error.HTTPError) -> ModelFileError:
    """The final answer for an HTTP error no retry can change (404, 403, 416...)."""
    if error.code == 416:
        part.unlink(missing_ok=True)
        return ModelFileError(
            f"download of {file.filename}: the server refused to resume; "
            f"the partial file was removed, re-run `{DOWNLOAD_COMMAND}` to start over"
        )
    return ModelFileError(
        f"download of {file.filename} failed: HTTP {error.code} {error.reason} from {url}"
    )


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds; its HTTP-date form is left to the backoff."""
    return float(value) if value is not None and value.strip().isdigit() else None


def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": "edge-assistant", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _accepted_offset(file: ModelFile, response: http.client.HTTPResponse, offset: int) -> int:
    """The offset the server actually resumes from: ours on 206, 0 on a plain 200."""
    if offset and response.status == 206:
        match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            raise ModelFileError(
                f"download of {file.filename}: the server resumed at the wrong place "
                f"({response.headers.get('Content-Range')!r}, asked for byte {offset})"
            )
        _check_total(file, match.group(2))
        return offset
    if offset:
        logger.info("%s: the server ignored the resume request; starting over", file.filename)
    _check_total(file, response.headers.get("Content-Length"))
    return 0


def _check_total(file: ModelFile, total: str | None) -> None:
    if total is not None and total.isdigit() and int(total) != file.size:
        raise ModelFileError(
            f"download of {file.filename}: the server offers {total} bytes but the manifest "
            f"expects {file.size}; wrong URL or mirror?"
        )


def _stream(
    file: ModelFile,
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    hasher: Hasher,
    meter: Progress,
) -> int:
    """Append the response body to ``part``; return how many bytes it then holds.

    ``read1`` hands over whatever arrived, so when the connection fails no received
    byte is left in a read buffer: the part file holds all of them for the resume.
    """
    received = offset
    try:
        out = part.open("ab" if offset else "wb")
    except OSError as e:
        raise ModelFileError(f"cannot write {part}: {e.strerror}") from e
    try:
        with out:
            while chunk := response.read1(CHUNK_BYTES):
                if received + len(chunk) > file.size:
                    out.close()
                    part.unlink()
                    raise ModelFileError(
                        f"download of {file.filename}: the server sent more than the expected "
                        f"{file.size} bytes; the partial file was removed"
                    )
                _write(out, chunk, part)
                received += len(chunk)
                hasher.update(chunk)
                meter.update(received)
            out.flush()
            os.fsync(out.fileno())
    finally:
        meter.close()
    return received


def _write(out: BinaryIO, chunk: bytes, part: Path) -> None:
    """Write one chunk, turning a disk error into a message that is not about the network."""
    try:
        out.write(chunk)
    except OSError as e:
        raise ModelFileError(f"cannot write {part}: {e.strerror}") from e


def _reason(error: BaseException, timeout_s: float) -> str:
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    if isinstance(error, TimeoutError):
        return f"no data for {timeout_s:g} s"
    return str(error) or type(error).__name__

