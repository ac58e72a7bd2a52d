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


def layout_tree() -> list[str]:
    """The paths the Development section's layout tree names: packages end in /."""
    readme = (ROOT / "README.md").read_text()
    development = readme[readme.index("## Development"):]
    tree = re.search(r"```\n(\s*edge_assistant/\n.*?)\n\s*```", development, re.S).group(1).splitlines()
    paths, parents = [], []
    for line in tree:
        depth = (len(line) - len(line.lstrip())) // 2 - 1  # the block itself is indented by two
        name = line.split()[0]
        parents[depth:] = [name]
        paths.append("".join(parents))
    return paths


def test_the_readme_layout_tree_names_every_module_and_only_modules_that_exist() -> None:
    named = layout_tree()
    assert named[0] == "edge_assistant/" and len(named) == len(set(named))
    for path in named:
        target = ROOT / path
        assert (target / "__init__.py").is_file() if path.endswith("/") else target.is_file(), path
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "edge_assistant").rglob("*.py") if p.name != "__init__.py"}
    packages = {p.parent.relative_to(ROOT).as_posix() + "/" for p in (ROOT / "edge_assistant").rglob("__init__.py")}
    assert modules | packages == set(named)
