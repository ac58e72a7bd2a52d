"""Files that appear complete or not at all: an output the user keeps (a reply,
a model, a wake word) must never be left half written by a crash or a full disk."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` for the caller to write; renamed over
    ``path`` when the block ends, removed if it raises.

    The temporary file is created here with mode 0666, so the user's umask decides
    the final mode (0644 under umask 022) as for any other file they make;
    ``tempfile.mkstemp`` would create it 0600, and the rename keeps that.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
