"""Built-in tools, the persisted scheduler and the allowlisted commands (fast)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from edge_assistant.config import Config, parse_config_file
from edge_assistant.errors import UsageError
from edge_assistant.tools.builtins import spoken_duration
from edge_assistant.tools.commands import parse_commands
from edge_assistant.tools.scheduler import LATE_GRACE_SECONDS, Scheduler
from edge_assistant.tools.setup import build_tools


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tools_for(tmp_path: Path, clock: Clock, commands: list | None = None, on_stop=None, on_forget=None):
    config = Config()
    config.tools.state_dir = str(tmp_path / "state")
    config.tools.command = commands or []
    tools = build_tools(config, clock=clock)
    tools.hooks.on_stop = on_stop or tools.hooks.on_stop
    tools.hooks.on_forget = on_forget or tools.hooks.on_forget
    return tools


def test_timer_set_listed_fired_once(tmp_path: Path) -> None:
    clock = Clock()
    tools = tools_for(tmp_path, clock)
    box = tools.toolbox
    assert box.call("set_timer", {"minutes": 2, "seconds": 5, "label": "tea"}).result["duration"] == "2 minutes 5 seconds"
    clock.now += 60
    listed = box.call("list_timers", {}).result
    assert listed["count"] == 1 and listed["pending"][0]["time_left"] == "1 minute 5 seconds"
    assert tools.scheduler.due() == []
    clock.now += 65
    (fired,) = tools.scheduler.due()
    assert fired.describe() == "tea timer" and tools.scheduler.due() == []


def test_timer_bounds(tmp_path: Path) -> None:
    box = tools_for(tmp_path, Clock()).toolbox
    assert box.call("set_timer", {}).status == "failed"
    assert box.call("set_timer", {"hours": 25}).status == "rejected"
    assert box.call("set_timer", {"seconds": -5}).status == "rejected"
    assert box.call("set_timer", {"seconds": 5, "label": "tea; rm -rf /"}).status == "rejected"


def test_a_timer_survives_a_restart_and_one_due_while_stopped_is_missed(tmp_path: Path) -> None:
    clock = Clock()
    first = tools_for(tmp_path, clock)
    first.toolbox.call("set_timer", {"minutes": 10, "label": "pasta"})
    first.toolbox.call("set_timer", {"minutes": 1, "label": "eggs"})
    clock.now += 30  # a restart half a minute later: both still pending
    second = tools_for(tmp_path, clock)
    assert [entry.label for entry in second.scheduler.pending()] == ["eggs", "pasta"]
    clock.now += 60 + LATE_GRACE_SECONDS + 1  # stopped past the eggs' time, and then some
    third = tools_for(tmp_path, clock)
    assert [entry.label for entry in third.scheduler.take_missed()] == ["eggs"]
    assert [entry.label for entry in third.scheduler.pending()] == ["pasta"]
    assert third.scheduler.take_missed() == []
    assert [entry.label for entry in tools_for(tmp_path, clock).scheduler.pending()] == ["pasta"]  # missed ones are told once


def test_a_corrupt_state_file_is_kept_aside(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "timers.json").write_text("{not json")
    scheduler = Scheduler(state, Clock())
    assert scheduler.pending() == []
    (aside,) = state.glob("timers.json.corrupt-*")
    assert aside.read_text() == "{not json"


def test_alarm_at_the_next_such_clock_time(tmp_path: Path) -> None:
    clock = Clock(time.mktime((2026, 11, 27, 23, 0, 0, 0, 0, -1)))
    box = tools_for(tmp_path, clock).toolbox
    result = box.call("set_alarm", {"time": "07:30"}).result
    assert result["rings_at"] == "07:30" and result["day"] == "Saturday"
    assert box.call("set_alarm", {"time": "7:30"}).status == "rejected"
    assert box.call("set_alarm", {"time": "24:00"}).status == "rejected"


def test_cancel_by_name_only_one_or_all(tmp_path: Path) -> None:
    tools = tools_for(tmp_path, Clock())
    box = tools.toolbox
    box.call("set_timer", {"minutes": 1, "label": "tea"})
    box.call("set_timer", {"minutes": 2, "label": "eggs"})
    assert "2 are set" in box.call("cancel_timer", {}).result["error"]
    assert box.call("cancel_timer", {"label": "Tea"}).result == {"cancelled": ["tea timer"]}
    assert box.call("cancel_timer", {}).result == {"cancelled": ["eggs timer"]}
    assert box.call("cancel_timer", {"all": True}).status == "failed"


def test_time_and_date(tmp_path: Path) -> None:
    clock = Clock(time.mktime((2026, 3, 5, 9, 7, 0, 0, 0, -1)))
    result = tools_for(tmp_path, clock).toolbox.call("get_date_time", {}).result
    assert result["time"] == "09:07" and result["date"] == "Thursday 5 March 2026"


def test_volume_is_persisted_and_applied(tmp_path: Path) -> None:
    gains = []
    tools = tools_for(tmp_path, Clock())
    tools.volume.apply = gains.append
    assert tools.toolbox.call("volume", {"level": 50}).result == {"volume": 50}
    assert gains == [0.25]
    assert tools.toolbox.call("volume", {"change": 80}).result == {"volume": 100}
    assert tools.toolbox.call("volume", {"level": 101}).status == "rejected"
    assert tools_for(tmp_path, Clock()).volume.level == 100


def test_stop_ends_the_turn_and_forget_asks_for_a_reset(tmp_path: Path) -> None:
    stops, forgets = [], []
    box = tools_for(tmp_path, Clock(), on_stop=lambda: stops.append(1), on_forget=lambda: forgets.append(1)).toolbox
    assert box.call("stop", {}).end_turn and stops == [1]
    assert not box.call("forget_conversation", {}).end_turn and forgets == [1]


def test_spoken_duration() -> None:
    assert spoken_duration(3725) == "1 hour 2 minutes"
    assert spoken_duration(1) == "1 second"
    assert spoken_duration(0) == "0 seconds"


def script(tmp_path: Path, body: str, name: str = "tool.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_command_arguments_reach_the_program_literally(tmp_path: Path) -> None:
    program = script(tmp_path, 'for a in "$@"; do printf "[%s]\\n" "$a"; done; env | sort\n')
    commands = [{
        "name": "say_it", "description": "Print", "argv": [program, "--text={text}", "{n}", "{flag}", "{opt}"],
        "parameters": {"text": {"type": "string"}, "n": {"type": "number"}, "flag": {"type": "boolean"},
                       "opt": {"type": "string", "required": False}},
    }]
    box = tools_for(tmp_path, Clock(), commands).toolbox
    hostile = "$(touch /tmp/pwned); `id` | cat /etc/passwd > x && ../../.. '\"*"
    record = box.call("say_it", {"text": hostile, "n": 2.0, "flag": True})
    assert record.status == "ok"
    lines = record.result["output"].splitlines()
    assert lines[:3] == [f"[--text={hostile}]", "[2]", "[true]"]  # the absent optional one is left out
    assert sorted(line.split("=")[0] for line in lines[3:]) == ["LANG", "LC_ALL", "PATH", "PWD"]  # a clean environment
    assert not Path("/tmp/pwned").exists()


def test_command_option_injection_timeout_failure_and_truncation(tmp_path: Path) -> None:
    commands = [
        {"name": "echo_it", "description": "Echo", "argv": ["echo", "{text}"], "parameters": {"text": {"type": "string"}}},
        {"name": "slow", "description": "Sleep", "argv": [script(tmp_path, "sleep 30\n", "slow.sh")], "timeout_seconds": 0.5},
        {"name": "fails", "description": "Fail", "argv": [script(tmp_path, "echo oops >&2; exit 3\n", "fail.sh")]},
        {"name": "chatty", "description": "Talk", "argv": [script(tmp_path, "yes | head -c 100000\n", "chat.sh")]},
    ]
    box = tools_for(tmp_path, Clock(), commands).toolbox
    assert box.call("echo_it", {"text": "-e rm"}).status == "rejected"
    started = time.monotonic()
    slow = box.call("slow", {})
    assert slow.status == "failed" and "longer than 0.5 s" in slow.result["error"] and time.monotonic() - started < 5
    failed = box.call("fails", {})
    assert failed.status == "failed" and failed.result == {"exit_code": 3, "output": "", "error_output": "oops"}
    assert len(box.call("chatty", {}).result["output"]) <= 1001


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({"name": "x", "description": "d", "argv": ["echo", "{level}"]}, "tools.command[0].argv[1]: placeholder {level} has no parameter"),
        ({"name": "x", "description": "d", "argv": ["echo", "{v}"], "parameters": {"v": {"type": "float"}}},
         "tools.command[0].parameters.v.type = 'float' is invalid"),
        ({"name": "x", "description": "d", "argv": ["/nonexistent/prog"]}, "tools.command[0].argv[0] = '/nonexistent/prog': no such program"),
        ({"name": "x", "description": "d", "argv": ["PLAIN_FILE"]}, "not executable"),
        ({"name": "x", "description": "d", "argv": []}, "tools.command[0].argv must be a non-empty list"),
        ({"name": "Bad Name", "description": "d", "argv": ["echo"]}, "tools.command[0].name = 'Bad Name' is invalid"),
        ({"name": "x", "argv": ["echo"]}, "tools.command[0].description is missing"),
        ({"name": "x", "description": "d", "argv": ["echo"], "shell": True}, "unknown key shell"),
        ({"name": "stop", "description": "d", "argv": ["echo"]}, "tools.command[0].name = 'stop' is already a tool"),
        ({"name": "x", "description": "d", "argv": ["{p}"], "parameters": {"p": {"type": "string"}}}, "cannot be a placeholder"),
        ({"name": "x", "description": "d", "argv": ["echo", "{p}"], "parameters": {"p": {"type": "integer", "enum": ["a"]}}},
         "enum and pattern apply to string parameters only"),
    ],
)
def test_bad_command_configuration_is_one_line_naming_the_key(tmp_path: Path, command: dict, message: str) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program")
    plain.chmod(0o644)
    command = {**command, "argv": [str(plain) if item == "PLAIN_FILE" else item for item in command["argv"]]}
    with pytest.raises(UsageError) as caught:
        tools_for(tmp_path, Clock(), [command])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_commands_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[tools]\nstate_dir = "%s"\n\n[[tools.command]]\nname = "music_volume"\ndescription = "Set the music volume"\n'
        'argv = ["echo", "volume", "{level}"]\nconfirm = true\n'
        '[tools.command.parameters.level]\ntype = "integer"\nminimum = 0\nmaximum = 100\n' % (tmp_path / "state")
    )
    config = parse_config_file(path)
    (tool,) = parse_commands(config.tools.command, str(path))
    assert tool.confirm and tool.argv[1:] == ("volume", "{level}") and os.path.isabs(tool.argv[0])
    assert tool.command_line({"level": 30})[1:] == ["volume", "30"]
    assert "[[tools.command]]" not in config.to_toml() and 'name = "music_volume"' in config.to_toml()
    json.dumps(config.tools.command)


def test_nothing_is_written_until_something_is_saved(tmp_path: Path) -> None:
    tools = tools_for(tmp_path, Clock())
    tools.toolbox.call("list_timers", {})
    tools.toolbox.call("get_date_time", {})
    assert not (tmp_path / "state").exists()  # a one-shot run leaves no state directory behind


def test_an_unwritable_state_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = Config()
    config.tools.state_dir = str(blocker / "state")
    with pytest.raises(UsageError, match="tools.state_dir .*/a-file/state is not writable"):
        build_tools(config)
