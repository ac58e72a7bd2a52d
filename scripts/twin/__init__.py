"""The twin builder's parts (scripts/make_twin.py is its command line): the
checks every builder makes, and the error it reports."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class TwinError(Exception):
    """A user-facing error (bad arguments, unwritable output, missing data)."""


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise TwinError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise TwinError(f"--out {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TwinError(f"cannot create output directory {out_dir}: {e.strerror or e}") from e
    if not os.access(out_dir, os.W_OK):
        raise TwinError(f"output directory {out_dir} is not writable")

