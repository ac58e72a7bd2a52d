"""``edge-assistant tools list`` and ``tools call``: exit 0 ran, 1 failed, 2 rejected;
one-line errors; bad tool configuration named at startup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(tmp_path: Path, *args: str, config: str = "", stdin: str = "") -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.toml"
    path.write_text(f'[tools]\nstate_dir = "{tmp_path / "state"}"\n' + config)
    env = {**os.environ, "XDG_CONFIG_HOME": "/nonexistent", "PYTHONPATH": str(Path(__file__).parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", "edge_assistant", *args, "--config", str(path)],
        capture_output=True, text=True, env=env, input=stdin, timeout=60,
    )


COMMAND = """
[[tools.command]]
name = "shout"
description = "Print a word"
argv = ["/bin/echo", "{word}"]
[tools.command.parameters.word]
type = "string"
enum = ["hello", "bye"]

[[tools.command]]
name = "wipe"
description = "Dangerous"
argv = ["/bin/echo", "wiped"]
confirm = true

[[tools.command]]
name = "broken"
description = "Fails"
argv = ["/bin/false"]
"""


def test_list_shows_builtins_and_commands(tmp_path: Path) -> None:
    result = cli(tmp_path, "tools", "list", config=COMMAND)
    assert result.returncode == 0, result.stderr
    assert "set_timer:" in result.stdout and "shout: Print a word" in result.stdout
    assert "runs: /bin/echo {word}" in result.stdout and "wipe (asks first)" in result.stdout
    declarations = json.loads(cli(tmp_path, "tools", "list", "--json", config=COMMAND).stdout)
    assert {item["function"]["name"] for item in declarations} >= {"get_date_time", "shout", "wipe"}


def test_call_exit_codes(tmp_path: Path) -> None:
    ran = cli(tmp_path, "tools", "call", "shout", "--args", '{"word": "hello"}', config=COMMAND)
    assert ran.returncode == 0 and json.loads(ran.stdout)["result"]["output"] == "hello"
    rejected = cli(tmp_path, "tools", "call", "shout", "--args", '{"word": "; reboot"}', config=COMMAND)
    assert rejected.returncode == 2 and json.loads(rejected.stdout)["status"] == "rejected"
    assert rejected.stderr.strip() == "edge-assistant: shout: argument word must be one of hello, bye"
    assert cli(tmp_path, "tools", "call", "nope", config=COMMAND).returncode == 2
    bad_json = cli(tmp_path, "tools", "call", "shout", "--args", "{word", config=COMMAND)
    assert bad_json.returncode == 2 and bad_json.stderr.count("\n") == 1 and "not valid JSON" in bad_json.stderr
    assert cli(tmp_path, "tools", "call", "broken", config=COMMAND).returncode == 1


def test_a_confirm_tool_needs_yes(tmp_path: Path) -> None:
    declined = cli(tmp_path, "tools", "call", "wipe", config=COMMAND)
    assert declined.returncode == 2 and "pass --yes" in declined.stderr
    assert cli(tmp_path, "tools", "call", "wipe", "--yes", config=COMMAND).returncode == 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('[[tools.command]]\nname = "x"\ndescription = "d"\nargv = ["/bin/echo", "{level}"]\n',
         "tools.command[0].argv[1]: placeholder {level} has no parameter"),
        ('[[tools.command]]\nname = "x"\ndescription = "d"\nargv = ["/no/such"]\n', "tools.command[0].argv[0] = '/no/such': no such program"),
        ('[[tools.command]]\nname = "x"\ndescription = "d"\nargv = ["/bin/echo", "{v}"]\n[tools.command.parameters.v]\ntype = "text"\n',
         "tools.command[0].parameters.v.type = 'text' is invalid"),
    ],
)
def test_bad_tool_configuration_is_one_line(tmp_path: Path, config: str, message: str) -> None:
    result = cli(tmp_path, "tools", "list", config=config)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
