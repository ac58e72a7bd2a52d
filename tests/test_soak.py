"""The soak (scripts/soak.py) at 50 turns: barge-ins, discards, follow-ups,
resets, timers, confirmations and a stalling microphone around real turns on
the twin; no error event, the KV cache matching the bookkeeping after every
turn, and a constant thread count. The 1000-turn run is scripts/soak.py's
default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_fifty_turns_of_everything(twin) -> None:  # noqa: ARG001 - builds the twin the soak loads
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--turns", "50"], capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "turns: 50 " in result.stdout and "error events: 0; cache drifts: 0" in result.stdout
