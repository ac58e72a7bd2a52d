"""Shared pytest fixtures."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def load_make_twin():
    """Import scripts/make_twin.py (scripts/ is not a package)."""
    name = "edge_assistant_make_twin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "make_twin.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def twin() -> Twin:
    """The Gemma 4 E2B twin: ``.model`` and ``.mmproj`` paths (read-only use)."""
    mt = load_make_twin()
    model, mmproj = mt.ensure_twin(0)
    return Twin(model, mmproj, mt.twin_fingerprint(0))
