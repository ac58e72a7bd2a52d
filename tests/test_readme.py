"""The README's promises that tooling can check."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    test_command = re.search(r"Set up and run the whole test suite.*?```sh\n(.*?)\n```", readme, re.S).group(1)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_documented_exit_codes_match_the_code() -> None:
    from edge_assistant import errors

    readme = (ROOT / "README.md").read_text()
    for error in (errors.UsageError, errors.AudioInputError, errors.ModelFileError, errors.NoSpeechError, errors.AudioDeviceError):
        assert f"| {error.exit_code} |" in readme, error.__name__
