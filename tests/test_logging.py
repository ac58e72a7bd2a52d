"""What reaches the journal: ``run`` logs at INFO by default (one line per wake,
per turn with its timings, per tool call); ``--verbose`` adds debug and
llama.cpp's own logs, ``--quiet`` keeps warnings only."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from edge_assistant.cli import build_parser, log_level


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
