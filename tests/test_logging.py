"""What reaches the journal: ``run`` logs at INFO by default (one line per wake,
per turn with its timings, per tool call); ``--verbose`` adds debug and
llama.cpp's own logs, ``--quiet`` keeps warnings only."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_assistant.cli import build_parser, log_level

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["run"], logging.INFO),
        (["run", "--verbose"], logging.DEBUG),
        (["run", "--quiet"], logging.WARNING),
        (["--quiet", "run"], logging.WARNING),
        (["--once", "question.wav"], logging.WARNING),
        (["--once", "question.wav", "-v"], logging.DEBUG),
    ],
)
def test_run_logs_at_info_unless_told_otherwise(argv: list[str], level: int) -> None:
    args = build_parser().parse_args(argv)
    assert log_level(args.command, args.verbose, args.quiet) == level


def test_verbose_and_quiet_together_is_one_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_assistant", "run", "--verbose", "--quiet"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "exclude each other" in result.stderr


@pytest.mark.slow
def test_the_journal_has_a_line_per_wake_turn_and_tool_call(twin, openwakeword_models: Path, tmp_path: Path) -> None:
    """The daemon itself (its reply scripted) at the default level: what
    ``journalctl -u edge-assistant`` would show after "Hey Jarvis, set a timer"."""
    from speech import VOICE_PATH, concat, silence, speak

    from edge_assistant.audio.files import write_wav_atomic
    from edge_assistant.audio.format import MODEL_SAMPLE_RATE

    stream = tmp_path / "in.wav"
    write_wav_atomic(stream, concat(silence(1.0), speak("Hey Jarvis"), silence(0.4),
                                    speak("set a timer for five minutes"), silence(6.0)).samples, MODEL_SAMPLE_RATE)
    config = tmp_path / "config.toml"
    config.write_text(f'[wake]\nmodel = "{openwakeword_models / "hey_jarvis_v0.1.onnx"}"\n')
    reply = "<|tool_call>call:set_timer{seconds:300}<tool_call|><|tool_response>Your five minute timer is set."
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "scripted_daemon.py"), "--reply", reply, "run", "--config", str(config),
         "--input-file", str(stream), "--output-file", str(tmp_path / "out.wav"),
         "--model", str(twin.model), "--mmproj", str(twin.mmproj), "--voice", str(VOICE_PATH)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()

    def logged(start: str) -> list[str]:
        return [line for line in lines if line.startswith(start)]

    assert len(logged("INFO edge_assistant.daemon.events: wake ")) == 1
    (turn,) = logged("INFO edge_assistant.daemon.events: turn ")
    assert '"timings_ms": {' in turn and '"turn_total": ' in turn
    assert len(logged("INFO edge_assistant.tools.core: tool call set_timer(")) == 1
