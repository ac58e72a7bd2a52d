"""Is a model file complete and the one the manifest names? Presence, size and
sha256, against the published hash or, where none is published, against the
``FILENAME.sha256`` sidecar (``sha256sum -c`` format) recorded at download."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..atomic import atomic_path
from .manifest import DOWNLOAD_COMMAND, SHA256_RE, ModelFile

HASH_CHUNK_BYTES = 1 << 20
PART_SUFFIX = ".part"
SHA256_SUFFIX = ".sha256"


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


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so gigabyte files need no memory."""
    return hash_into(hashlib.sha256(), path).hexdigest()


def hash_into(hasher: Hasher, path: Path) -> Hasher:
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            hasher.update(chunk)
    return hasher


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SHA256_SUFFIX)


def part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def record_hash(path: Path, digest: str) -> None:
    with atomic_path(sidecar(path)) as temp:
        temp.write_text(f"{digest}  {path.name}\n", encoding="ascii")


def recorded_hash(path: Path) -> str | None:
    try:
        words = sidecar(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return words[0] if words and SHA256_RE.fullmatch(words[0]) else None


def verify(files: Sequence[ModelFile], dest_dir: Path) -> list[VerifyResult]:
    """Check presence, size and sha256 (always re-hashing) of each file."""
    return [_verify_one(file, Path(dest_dir)) for file in files]


def _verify_one(file: ModelFile, dest_dir: Path) -> VerifyResult:
    path = file.path(dest_dir)
    if not path.is_file():
        part = part_path(path)
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
    return judge_hash(file, path, sha256_file(path))


def judge_hash(file: ModelFile, path: Path, actual: str) -> VerifyResult:
    """Compare with the published sha256, else with the one recorded at download."""
    if file.sha256:
        if actual == file.sha256:
            return VerifyResult(file, path, VerifyStatus.OK, f"sha256 {actual} as published")
        detail = f"expected {file.sha256}, got {actual}"
        return VerifyResult(file, path, VerifyStatus.WRONG_SHA256, detail)
    recorded = recorded_hash(path)
    if recorded is None:
        detail = f"size matches; sha256 {actual} has no published or recorded value to compare with"
        return VerifyResult(file, path, VerifyStatus.UNCHECKED, detail)
    if recorded == actual:
        detail = f"sha256 {actual} matches the hash recorded at download (none is published)"
        return VerifyResult(file, path, VerifyStatus.OK_RECORDED, detail)
    detail = f"recorded at download {recorded}, now {actual}"
    return VerifyResult(file, path, VerifyStatus.WRONG_SHA256, detail)

