"""Shared pytest fixtures."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# Gemma 4 E2B twin (scripts/make_twin.py): tiny random-weight model + audio
# projector that the real llama.cpp loads.  Built once per fingerprint into
# $EDGE_ASSISTANT_TWIN_CACHE/<fingerprint>/ (default
# ~/.cache/edge-assistant/twin/<fingerprint>/).
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


def twin_cache_root() -> Path:
    env = os.environ.get("EDGE_ASSISTANT_TWIN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-assistant" / "twin"


def ensure_twin(seed: int = 0) -> Twin:
    """Return the cached twin for ``seed``, building it first if needed.

    The build goes into a fresh temporary directory next to the final one and
    is renamed into place only when both files are complete, so an aborted or
    concurrent run never leaves a half-built cache entry."""
    mt = load_make_twin()
    fp = mt.twin_fingerprint(seed)
    root = twin_cache_root()
    final = root / fp

    def complete(d: Path) -> Twin | None:
        model, mmproj = d / mt.MODEL_NAME, d / mt.MMPROJ_NAME
        return Twin(model, mmproj, fp) if model.is_file() and mmproj.is_file() else None

    if (twin := complete(final)) is not None:
        return twin
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fp}.tmp-", dir=root))
    try:
        mt.build_twin(tmp, seed)
        if final.exists() and complete(final) is None:
            shutil.rmtree(final, ignore_errors=True)  # damaged by hand: replace it
        try:
            os.rename(tmp, final)
        except OSError:
            if complete(final) is None:  # lost a race only if the winner is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    twin = complete(final)
    assert twin is not None, f"twin cache {final} incomplete after build"
    return twin


@pytest.fixture(scope="session")
def twin() -> Twin:
    """The Gemma 4 E2B twin: ``.model`` and ``.mmproj`` paths (read-only use)."""
    return ensure_twin(0)
