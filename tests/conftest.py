"""Shared pytest fixtures."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from twin_generator import load_make_twin


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """``cli.main`` points the root logger at the sys.stderr of the test that
    called it (pytest's capture of that test); later tests must not log into
    that closed stream ("--- Logging error ---" in their output)."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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


# --------------------------------------------------------------------------
# Wake word model for WAKE_PHRASE, trained by edge_assistant.wake with
# the joe voice, once per fingerprint (training code + settings) into
# $EDGE_ASSISTANT_WAKE_CACHE/<fingerprint>.onnx (default
# ~/.cache/edge-assistant/wakeword/). Training writes atomically, so an aborted
# or concurrent run never leaves a half-written model behind.
# --------------------------------------------------------------------------
WAKE_PHRASE = "hey tessa"
WAKE_MINUTES = 1.0


def wake_cache() -> Path:
    """$EDGE_ASSISTANT_WAKE_CACHE, default ~/.cache/edge-assistant/wakeword/."""
    import os

    env = os.environ.get("EDGE_ASSISTANT_WAKE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-assistant" / "wakeword"


def ensure_wake_model() -> Path:
    import hashlib

    import edge_assistant.wake
    from edge_assistant.wake.train import TrainOptions, train
    from speech import VOICE_PATH

    digest = hashlib.sha256(f"{WAKE_PHRASE}|{WAKE_MINUTES}|{VOICE_PATH.stat().st_size}".encode())
    for source in sorted(Path(edge_assistant.wake.__file__).parent.glob("*.py")):  # runtime and training
        digest.update(source.read_bytes())
    root = wake_cache()
    path = root / f"{digest.hexdigest()[:16]}.onnx"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        train(TrainOptions(WAKE_PHRASE, path, (VOICE_PATH,), minutes=WAKE_MINUTES))
    return path


@pytest.fixture(scope="session")
def wake_model() -> Path:
    """An ONNX wake model for WAKE_PHRASE with its threshold in the metadata."""
    return ensure_wake_model()


# --------------------------------------------------------------------------
# openWakeWord 0.5.1, the reference for the wake stage: its own runtime, and its
# pretrained wake models (the manifest's role "wake"), which its wheel carries
# byte for byte as its v0.5.1 GitHub release does. pip fetches the wheel from
# PyPI without installing it (as a dependency it would pull tflite-runtime, which
# has no wheels for aarch64 or Python 3.12+), and it is unpacked once into
# $EDGE_ASSISTANT_WAKE_CACHE/openwakeword-0.5.1/. The tests serve its model folder
# as a download mirror, so the shipped manifest's sizes and sha256s are checked
# against the real bytes by `models download` itself.
# --------------------------------------------------------------------------
OPENWAKEWORD_WHEEL = "openwakeword==0.5.1"


def ensure_openwakeword() -> Path:
    """The unpacked wheel: a folder that holds the ``openwakeword`` package."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    root = wake_cache()
    folder = root / OPENWAKEWORD_WHEEL.replace("==", "-")
    if (folder / "openwakeword" / "__init__.py").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "--dest", scratch, OPENWAKEWORD_WHEEL],
            capture_output=True, text=True,
        )
        if fetched.returncode != 0:
            pytest.fail(f"pip could not fetch {OPENWAKEWORD_WHEEL} from PyPI: {fetched.stderr.strip()[-500:]}")
        (wheel,) = Path(scratch).glob("*.whl")
        staging = Path(scratch) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(staging)
        staging.rename(folder)  # complete or absent: never half unpacked
    return folder


@pytest.fixture(scope="session")
def openwakeword_models() -> Path:
    """openWakeWord's model folder: the manifest's wake models under their file names."""
    return ensure_openwakeword() / "openwakeword" / "resources" / "models"


@pytest.fixture
def openwakeword(monkeypatch: pytest.MonkeyPatch):
    """openWakeWord's own package, imported from the unpacked wheel."""
    import importlib

    monkeypatch.syspath_prepend(str(ensure_openwakeword()))
    return importlib.import_module("openwakeword")
