"""Shared pytest fixtures."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from twin_generator import load_make_twin


# --------------------------------------------------------------------------
# Gemma 4 E2B twin (scripts/make_twin.py): tiny random-weight model + audio
# projector that the real llama.cpp loads.  make_twin.ensure_twin() builds it
# once per fingerprint into $EDGE_ASSISTANT_TWIN_CACHE/<fingerprint>/ (default
# ~/.cache/edge-assistant/twin/<fingerprint>/); scripts/bench_once.py uses the
# same cache.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Twin:
    model: Path
    mmproj: Path
    fingerprint: str


@pytest.fixture(scope="session")
def twin() -> Twin:
    """The Gemma 4 E2B twin: ``.model`` and ``.mmproj`` paths (read-only use)."""
    mt = load_make_twin()
    model, mmproj = mt.ensure_twin(0)
    return Twin(model, mmproj, mt.twin_fingerprint(0))
