"""Model files: the manifest, resumable verified downloads, and projector slimming.

A Pi fetches gigabytes over Wi-Fi onto an SD card, so a download must survive
interruption (it retries with backoff, resuming from ``FILENAME.part``, and a re-run
after it gave up resumes too), must never leave a half file under the final name (the
final name appears only by an atomic rename after the size and sha256 check), and
must refuse bytes whose sha256 differs from the manifest. A file under its final name
is therefore complete, which lets :func:`resolve` stay cheap.

Beside every downloaded file a ``FILENAME.sha256`` sidecar (``sha256sum -c`` format)
records the hash computed while downloading. It lets a re-run skip files without
re-reading gigabytes, and it is the reference for entries whose manifest sha256 is
empty (no published value). :func:`verify` always re-hashes.
"""

from __future__ import annotations

import enum
import hashlib
import http.client
import logging
import os
import random
import re
import shlex
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, TextIO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from edge_assistant.errors import ModelFileError, UsageError

if TYPE_CHECKING:
    from gguf import GGUFReader

logger = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("manifest.toml")
MODELS_DIR_ENV = "EDGE_ASSISTANT_MODELS"
BASE_URL_ENV = "EDGE_ASSISTANT_MODELS_BASE_URL"
SYSTEM_MODELS_DIR = Path("/var/lib/edge-assistant/models")
DOWNLOAD_COMMAND = "edge-assistant models download"
ROLES = ("model", "mmproj", "voice", "voice_config", "wake")

CHUNK_BYTES = 1 << 20
PART_SUFFIX = ".part"
SHA256_SUFFIX = ".sha256"
AUDIO_PROJECTOR_SUFFIX = ".audio.gguf"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_MANIFEST_FIELDS: tuple[tuple[str, type], ...] = (
    ("name", str),
    ("role", str),
    ("url", str),
    ("size", int),
    ("sha256", str),
    ("filename", str),
)
_TYPE_NAMES = {str: "a string", int: "an integer"}


@dataclass(frozen=True)
class ModelFile:
    """One manifest entry; ``sha256`` is "" when no published value is known."""

    name: str
    role: str
    url: str
    size: int
    sha256: str
    filename: str

    def path(self, dest_dir: Path) -> Path:
        return Path(dest_dir) / self.filename


class VerifyStatus(enum.Enum):
    OK = "ok"
    OK_RECORDED = "ok (recorded hash)"
    UNCHECKED = "ok (hash unchecked)"
    MISSING = "missing"
    PARTIAL = "partial"
    WRONG_SIZE = "wrong size"
    WRONG_SHA256 = "sha256 mismatch"


_USABLE = (VerifyStatus.OK, VerifyStatus.OK_RECORDED, VerifyStatus.UNCHECKED)


@dataclass(frozen=True)
class VerifyResult:
    """The state of one file, as ``models verify`` reports it."""

    file: ModelFile
    path: Path
    status: VerifyStatus
    detail: str

    @property
    def ok(self) -> bool:
        """True when the file is complete and no hash contradicts it."""
        return self.status in _USABLE

    def describe(self) -> str:
        """One line: file name, status and what to do about it."""
        return f"{self.file.filename}: {self.status.value}: {self.detail}"


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


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


# --- manifest and locations -------------------------------------------------------


def load_manifest(path: Path | None = None) -> list[ModelFile]:
    """Read and validate the manifest (default: the copy shipped in the package)."""
    source = MANIFEST_PATH if path is None else Path(path)
    try:
        with source.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ModelFileError(f"cannot read model manifest {source}: {e}") from e
    entries = data.get("file")
    if not isinstance(entries, list) or not entries:
        raise ModelFileError(f"model manifest {source} has no [[file]] entries")
    files = [_parse_entry(source, i, entry) for i, entry in enumerate(entries, 1)]
    names = [f.filename for f in files]
    if len(set(names)) != len(names):
        raise ModelFileError(f"model manifest {source} lists a filename twice")
    return files


def _parse_entry(source: Path, number: int, entry: object) -> ModelFile:
    where = f"model manifest {source}, entry {number}"
    if not isinstance(entry, dict):
        raise ModelFileError(f"{where}: not a table")
    for key, kind in _MANIFEST_FIELDS:
        value = entry.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelFileError(f"{where}: '{key}' must be {_TYPE_NAMES[kind]}")
    file = ModelFile(**{key: entry[key] for key, _ in _MANIFEST_FIELDS})
    problem = _entry_problem(file)
    if problem:
        raise ModelFileError(f"{where} ({file.name}): {problem}")
    return file


def _entry_problem(file: ModelFile) -> str | None:
    if file.role not in ROLES:
        return f"role must be one of {', '.join(ROLES)}"
    if urllib.parse.urlsplit(file.url).scheme not in ("http", "https"):
        return "url must be http or https"
    if file.size <= 0:
        return "size must be positive"
    if file.sha256 and not _SHA256_RE.fullmatch(file.sha256):
        return "sha256 must be 64 lowercase hex digits, or empty when unknown"
    if file.filename in ("", ".", "..") or Path(file.filename).name != file.filename:
        return "filename must be a plain file name"
    return None


def default_models_dir() -> Path:
    """$EDGE_ASSISTANT_MODELS, else the system directory if readable, else per user."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if SYSTEM_MODELS_DIR.is_dir() and os.access(SYSTEM_MODELS_DIR, os.R_OK | os.X_OK):
        return SYSTEM_MODELS_DIR
    return Path.home() / ".local" / "share" / "edge-assistant" / "models"


def audio_projector_path(mmproj_path: Path) -> Path:
    """Where ``models slim`` puts the audio-only copy of a projector, for resolve()."""
    return mmproj_path.with_name(Path(mmproj_path.name).stem + AUDIO_PROJECTOR_SUFFIX)


def resolve(role: str, dest_dir: Path | None = None, files: Sequence[ModelFile] | None = None) -> Path:
    """Path of the default file for ``role``, or ModelFileError saying how to fetch it.

    For ``mmproj`` an audio-only copy made by :func:`slim_projector` next to the
    downloaded projector wins: it needs about a third less RAM.
    """
    dest = default_models_dir() if dest_dir is None else Path(dest_dir)
    candidates = [f for f in (load_manifest() if files is None else files) if f.role == role]
    if not candidates:
        raise ModelFileError(f"the model manifest has no file with role '{role}'")
    file = candidates[0]
    path = file.path(dest)
    if role == "mmproj" and audio_projector_path(path).is_file():
        return audio_projector_path(path)
    if not path.is_file():
        raise ModelFileError(missing_message(file, dest))
    return path


def resolve_wake(item: str, dest_dir: Path | None = None, files: Sequence[ModelFile] | None = None) -> Path:
    """One ``wake.model`` item as a path: a manifest wake model by name ("hey_jarvis")
    or file stem ("hey_jarvis_v0.1"), a bare name as NAME.onnx in the models directory
    (where ``wakeword train`` output is kept), or else a path as given.

    A missing name gets a one-line ModelFileError saying how to get it.
    """
    dest = default_models_dir() if dest_dir is None else Path(dest_dir)
    path = Path(item).expanduser()
    if path.suffix == ".onnx" or len(path.parts) != 1:
        return path  # the loader names a missing or broken file
    pretrained = [f for f in (load_manifest() if files is None else files) if f.role == "wake"]
    for file in pretrained:
        if item in (file.name, Path(file.filename).stem):
            if not file.path(dest).is_file():
                raise ModelFileError(missing_message(file, dest, only=file.name))
            return file.path(dest)
    path = dest / f"{item}.onnx"
    if not path.is_file():
        names = ", ".join(file.name for file in pretrained)
        raise ModelFileError(
            f"wake word model '{item}' not found: no {path}; pretrained names are {names}, "
            f"or train one with `edge-assistant wakeword train`"
        )
    return path


def select(files: Sequence[ModelFile], only: Sequence[str]) -> list[ModelFile]:
    """The entries named by ``only`` (entry names or roles); all when it is empty."""
    if not only:
        return list(files)
    known = {file.name for file in files} | {file.role for file in files}
    unknown = [word for word in only if word not in known]
    if unknown:
        raise UsageError(
            f"--only {unknown[0]}: not a file name or role in the manifest "
            f"(roles: {', '.join(sorted({file.role for file in files}))}; names: {', '.join(file.name for file in files)})"
        )
    return [file for file in files if file.name in only or file.role in only]


def missing_message(file: ModelFile, dest_dir: Path, only: str | None = None) -> str:
    """One line naming the missing file and the exact command that fetches it."""
    command = DOWNLOAD_COMMAND
    if only:
        command += f" --only {only}"
    if Path(dest_dir) != default_models_dir():
        command += f" --dir {shlex.quote(str(dest_dir))}"
    return (
        f"{file.role} file {file.path(dest_dir)} is missing: "
        f"run `{command}` to fetch it ({_mb(file.size)})"
    )


# --- hashing and sidecars ---------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so gigabyte files need no memory."""
    return _hash_into(hashlib.sha256(), path).hexdigest()


def _hash_into(hasher: _Hasher, path: Path) -> _Hasher:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SHA256_SUFFIX)


def _part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def _record_hash(path: Path, digest: str) -> None:
    _sidecar(path).write_text(f"{digest}  {path.name}\n", encoding="ascii")


def _recorded_hash(path: Path) -> str | None:
    try:
        words = _sidecar(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return words[0] if words and _SHA256_RE.fullmatch(words[0]) else None


# --- verify -----------------------------------------------------------------------


def verify(files: Sequence[ModelFile], dest_dir: Path) -> list[VerifyResult]:
    """Check presence, size and sha256 (always re-hashing) of each file."""
    return [_verify_one(file, Path(dest_dir)) for file in files]


def _verify_one(file: ModelFile, dest_dir: Path) -> VerifyResult:
    path = file.path(dest_dir)
    if not path.is_file():
        part = _part_path(path)
        if part.is_file():
            detail = (
                f"interrupted download, {part.stat().st_size} of {file.size} bytes; "
                f"run `{DOWNLOAD_COMMAND}` to resume"
            )
            return VerifyResult(file, path, VerifyStatus.PARTIAL, detail)
        return VerifyResult(file, path, VerifyStatus.MISSING, f"run `{DOWNLOAD_COMMAND}`")
    size = path.stat().st_size
    if size != file.size:
        detail = f"{size} bytes, expected {file.size}; delete it and run `{DOWNLOAD_COMMAND}`"
        return VerifyResult(file, path, VerifyStatus.WRONG_SIZE, detail)
    return _judge_hash(file, path, sha256_file(path))


def _judge_hash(file: ModelFile, path: Path, actual: str) -> VerifyResult:
    """Compare with the published sha256, else with the one recorded at download."""
    if file.sha256:
        if actual == file.sha256:
            return VerifyResult(file, path, VerifyStatus.OK, f"sha256 {actual} as published")
        detail = f"expected {file.sha256}, got {actual}"
        return VerifyResult(file, path, VerifyStatus.WRONG_SHA256, detail)
    recorded = _recorded_hash(path)
    if recorded is None:
        detail = f"size matches; sha256 {actual} has no published or recorded value to compare with"
        return VerifyResult(file, path, VerifyStatus.UNCHECKED, detail)
    if recorded == actual:
        detail = f"sha256 {actual} matches the hash recorded at download (none is published)"
        return VerifyResult(file, path, VerifyStatus.OK_RECORDED, detail)
    detail = f"recorded at download {recorded}, now {actual}"
    return VerifyResult(file, path, VerifyStatus.WRONG_SHA256, detail)


# --- download ---------------------------------------------------------------------


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
    recorded = _recorded_hash(path)
    sidecar_fresh = recorded is not None and _sidecar(path).stat().st_mtime >= path.stat().st_mtime
    if sidecar_fresh and (not file.sha256 or recorded == file.sha256):
        logger.info("%s: present, verified at download", file.filename)
        return True
    actual = sha256_file(path)
    result = _judge_hash(file, path, actual)
    if not result.ok:
        logger.warning("%s: %s; downloading it again", file.filename, result.detail)
        return False
    _record_hash(path, actual)
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
    needed = sum(file.size - _part_size(_part_path(file.path(dest_dir))) for file in pending)
    free = shutil.disk_usage(dest_dir).free
    if needed > free:
        raise ModelFileError(
            f"downloading needs {_mb(needed)} but only {_mb(free)} is free in {dest_dir}"
        )


def _part_size(part: Path) -> int:
    return part.stat().st_size if part.is_file() else 0


def _source_url(file: ModelFile, base_url: str | None) -> str:
    if base_url is None:
        return file.url
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(file.filename)}"


def _download_one(file: ModelFile, dest_dir: Path, url: str, progress: bool, policy: DownloadPolicy) -> None:
    final = file.path(dest_dir)
    part = _part_path(final)
    actual = _fetch(file, url, part, progress, policy).hexdigest()
    if file.sha256 and actual != file.sha256:
        part.unlink(missing_ok=True)
        raise ModelFileError(
            f"{file.filename}: sha256 mismatch, expected {file.sha256}, got {actual}; "
            f"the download was discarded (from {url})"
        )
    os.replace(part, final)
    _record_hash(final, actual)
    if file.sha256:
        logger.info("%s: downloaded, sha256 verified", file.filename)
    else:
        logger.warning(
            "%s: downloaded; no published sha256, recorded %s in %s",
            file.filename, actual, _sidecar(final).name,
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
                _hash_into(self, self._part)
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
                file.filename, _mb(received), _mb(file.size), stop.reason,
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
            meter = _Progress(file.filename, file.size, offset, progress)
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
    hasher: _Hasher,
    meter: _Progress,
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
        meter.finish(received)
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


def _mb(size: int) -> str:
    """A human size: MB, or kB for the small config files."""
    return f"{size / 1e6:,.1f} MB" if size >= 1_000_000 else f"{size / 1e3:,.1f} kB"


class _Progress:
    """Progress on stderr: a redrawn bar on a terminal, else one line per 10 %."""

    _REDRAW_S = 0.2

    def __init__(self, label: str, total: int, start: int, enabled: bool) -> None:
        self._label = label
        self._total = total
        self._start = start
        self._enabled = enabled
        self._stream: TextIO = sys.stderr
        self._tty = enabled and self._stream.isatty()
        self._t0 = time.monotonic()
        self._last_draw = 0.0
        self._next_tenth = start * 10 // total + 1
        if enabled:
            verb = f"resuming at {_mb(start)} of" if start else "downloading"
            self._line(f"{label}: {verb} {_mb(total)}")

    def update(self, done: int) -> None:
        if not self._enabled:
            return
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= self._REDRAW_S:
                self._last_draw = now
                self._draw(done, end="")
            return
        tenth = done * 10 // self._total
        if tenth >= self._next_tenth:
            self._next_tenth = tenth + 1
            self._line(f"{self._label}: {tenth * 10}% ({_mb(done)} of {_mb(self._total)})")

    def finish(self, done: int) -> None:
        if self._tty:
            self._draw(done, end="\n")

    def _draw(self, done: int, end: str) -> None:
        width = 30
        filled = width * done // self._total
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        rate = (done - self._start) / elapsed / 1e6
        bar = "#" * filled + "-" * (width - filled)
        percent = 100 * done // self._total
        self._stream.write(
            f"\r{self._label} [{bar}] {percent:3d}% {_mb(done)} of {_mb(self._total)} "
            f"{rate:5.1f} MB/s{end}"
        )
        self._stream.flush()

    def _line(self, text: str) -> None:
        if self._tty:
            return
        self._stream.write(text + "\n")
        self._stream.flush()


# --- audio-only projector ---------------------------------------------------------

# Metadata and tensor names from llama.cpp tools/mtmd (clip-impl.h, clip.cpp): the
# loader reads "clip.vision.*" only for the vision encoder and the modality flags
# decide which encoders it builds. The gemma4a audio encoder loads "a.*" tensors and
# its embedder "mm.a.*"; the vision encoder "v.*" and its embedder "mm.*".
_HAS_VISION_KEY = "clip.has_vision_encoder"
_HAS_AUDIO_KEY = "clip.has_audio_encoder"
_VISION_KEY_PREFIX = "clip.vision."


def slim_projector(src: Path, dst: Path, overwrite: bool = False) -> Path:
    """Write an audio-only copy of a vision+audio projector GGUF; return ``dst``.

    The published Gemma 4 projectors carry both encoders and llama.cpp loads every
    encoder a file declares into RAM, so dropping vision saves memory on a 4 GB Pi.
    Written to ``dst.tmp`` and renamed, so ``dst`` is never half written.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise ModelFileError(f"refusing to overwrite {dst}: it already exists")
    reader = _open_gguf(src)
    _require_audio(reader, src)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        kept, dropped = _write_audio_only(reader, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        raise ModelFileError(f"cannot write {dst}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        "%s: kept %d audio tensors, dropped %d vision tensors (%s -> %s)",
        dst, kept, dropped, _mb(src.stat().st_size), _mb(dst.stat().st_size),
    )
    return dst


def _open_gguf(path: Path) -> GGUFReader:
    # Imported here: only slimming needs gguf (and numpy), not startup or download.
    from gguf import GGUFReader

    try:
        return GGUFReader(path, "r")
    except FileNotFoundError as e:
        raise ModelFileError(f"projector {path} not found") from e
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path} is not a readable GGUF file: {e}") from e


def _require_audio(reader: GGUFReader, src: Path) -> None:
    field = reader.get_field(_HAS_AUDIO_KEY)
    has_audio = field is not None and bool(field.contents())
    if not has_audio or not any(t.name.startswith("a.") for t in reader.tensors):
        raise ModelFileError(f"{src} has no audio encoder; nothing to keep")


def _is_vision_tensor(name: str) -> bool:
    return name.startswith("v.") or (name.startswith("mm.") and not name.startswith("mm.a."))


def _write_audio_only(reader: GGUFReader, path: Path) -> tuple[int, int]:
    """Copy metadata minus vision keys and tensors minus vision ones; return counts."""
    from gguf import GGUFValueType, GGUFWriter, Keys

    arch_field = reader.get_field(Keys.General.ARCHITECTURE)
    arch = arch_field.contents() if arch_field is not None else "clip"
    writer = GGUFWriter(path, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name in (Keys.General.ARCHITECTURE, _HAS_VISION_KEY):
            continue
        if name.startswith(_VISION_KEY_PREFIX):
            continue
        if name == Keys.General.ALIGNMENT:
            writer.add_custom_alignment(int(field.contents()))
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    writer.add_bool(_HAS_VISION_KEY, False)

    kept = [t for t in reader.tensors if not _is_vision_tensor(t.name)]
    for tensor in kept:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in kept:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return len(kept), len(reader.tensors) - len(kept)
