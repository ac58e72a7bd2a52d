"""The tool core: declarations, argument checks against a hostile corpus, and
the Toolbox that runs, times and records every call."""

from __future__ import annotations

import math

import pytest

from edge_assistant.tools import (
    FunctionTool, Parameter, Tool, Toolbox, ToolError, ToolRejected, ToolResult, check_arguments, declaration,
)


def echo_tool(**options) -> FunctionTool:
    parameters = (
        Parameter("text", "string", "what to echo", max_length=40),
        Parameter("mode", "string", "how", required=False, enum=("plain", "loud"), default="plain"),
        Parameter("level", "integer", "volume", required=False, minimum=0, maximum=100),
        Parameter("ratio", "number", "a ratio", required=False, minimum=0.5, maximum=2),
        Parameter("flag", "boolean", "a flag", required=False),
        Parameter("room", "string", "a room", required=False, pattern=r"[a-z]+( [a-z]+)?"),
    )
    return FunctionTool("echo", "Echo the text.", parameters, lambda arguments: ToolResult(dict(arguments)), **options)


def test_a_function_tool_is_a_tool() -> None:
    assert isinstance(echo_tool(), Tool)


def test_defaults_are_filled_and_values_kept() -> None:
    checked = check_arguments(echo_tool(), {"text": "hi", "level": 3, "ratio": 1, "flag": True})
    assert checked == {"text": "hi", "mode": "plain", "level": 3, "ratio": 1, "flag": True}


def test_an_integral_float_is_an_integer() -> None:
    assert check_arguments(echo_tool(), {"text": "hi", "level": 7.0})["level"] == 7


HOSTILE = [
    ({"text": "x" * 41}, "41 characters"),
    ({"text": "x" * 1_000_000}, "characters long"),
    ({"text": 5}, "must be a string"),
    ({"text": None}, "must be a string"),
    ({"text": ["a"]}, "must be a string"),
    ({"text": "a\x00b"}, "control characters"),
    ({"text": "line\nbreak"}, "control characters"),
    ({"text": "ok", "mode": "LOUD"}, "one of plain, loud"),
    ({"text": "ok", "mode": "plain; rm -rf /"}, "one of"),
    ({"text": "ok", "level": 101}, "at most 100"),
    ({"text": "ok", "level": -1}, "at least 0"),
    ({"text": "ok", "level": "50"}, "must be an integer"),
    ({"text": "ok", "level": True}, "must be an integer"),
    ({"text": "ok", "level": 2.5}, "must be an integer"),
    ({"text": "ok", "ratio": math.nan}, "finite number"),
    ({"text": "ok", "ratio": math.inf}, "finite number"),
    ({"text": "ok", "ratio": 3}, "at most 2"),
    ({"text": "ok", "ratio": "1"}, "finite number"),
    ({"text": "ok", "flag": "true"}, "true or false"),
    ({"text": "ok", "flag": 1}, "true or false"),
    ({"text": "ok", "room": "../../etc/passwd"}, "does not match"),
    ({"text": "ok", "room": "kitchen$(reboot)"}, "does not match"),
    ({"text": "ok", "room": "kitchen\nbedroom"}, "control characters"),
    ({"text": "ok", "shell": "yes"}, "no argument shell"),
    ({}, "needs argument text"),
    ("text", "must be an object"),
    (["text"], "must be an object"),
]


@pytest.mark.parametrize(("arguments", "message"), HOSTILE)
def test_hostile_arguments_are_rejected_before_anything_runs(arguments, message: str) -> None:
    ran = []
    tool = FunctionTool("echo", "x", echo_tool().parameters, lambda arguments: ran.append(arguments) or ToolResult({}))
    record = Toolbox([tool]).call("echo", arguments)
    assert record.status == "rejected" and not ran
    assert message in record.result["error"]
    with pytest.raises(ToolRejected):
        check_arguments(tool, arguments)


def test_metacharacters_and_paths_pass_literally_when_declared_free_text() -> None:
    text = "$(reboot); `id` | cat ../../etc/passwd > /x & echo '\"*"
    record = Toolbox([echo_tool()]).call("echo", {"text": text[:40]})
    assert record.status == "ok" and record.result["text"] == text[:40]


def test_unknown_tool_is_rejected() -> None:
    record = Toolbox([echo_tool()]).call("rm", {"path": "/"})
    assert record.status == "rejected" and "no tool named 'rm'" in record.result["error"]
    assert Toolbox().call(None, {}).status == "rejected"  # type: ignore[arg-type]


def test_a_record_reports_name_arguments_result_and_time() -> None:
    record = Toolbox([echo_tool()]).call("echo", {"text": "hi"})
    assert record.ok
    summary = record.as_dict()
    assert summary["name"] == "echo" and summary["arguments"] == {"text": "hi", "mode": "plain"}
    assert summary["result"] == {"text": "hi", "mode": "plain"} and summary["ms"] >= 0


def test_tool_errors_and_bugs_become_error_results() -> None:
    def fails(arguments):
        raise ToolError("the printer is on fire")

    def buggy(arguments):
        raise KeyError("oops")

    box = Toolbox([FunctionTool("fails", "x", (), fails), FunctionTool("buggy", "x", (), buggy)])
    assert box.call("fails", {}).result == {"error": "the printer is on fire"}
    record = box.call("buggy", {})
    assert record.status == "failed" and record.result == {"error": "internal error (KeyError)"}


def test_huge_results_are_cut() -> None:
    box = Toolbox([FunctionTool("chatty", "x", (), lambda arguments: ToolResult({"output": "y" * 100_000}))])
    assert len(box.call("chatty", {}).result["output"]) <= 1001


def test_confirmation_decides_whether_the_tool_runs() -> None:
    ran = []
    tool = FunctionTool("wipe", "x", (), lambda arguments: ran.append(1) or ToolResult({"done": True}), confirm=True)
    box = Toolbox([tool])
    assert box.call("wipe", {}).status == "declined"  # nobody to ask: not run
    assert box.call("wipe", {}, confirm=lambda tool, arguments: False).status == "declined"
    assert not ran
    assert box.call("wipe", {}, confirm=lambda tool, arguments: True).status == "ok" and ran == [1]


def test_declaration_is_what_the_chat_template_takes() -> None:
    function = declaration(echo_tool())["function"]
    assert function["name"] == "echo" and function["parameters"]["required"] == ["text"]
    properties = function["parameters"]["properties"]
    assert properties["mode"] == {"type": "string", "description": "how", "enum": ["plain", "loud"]}
    assert "from 0 to 100" in properties["level"]["description"]


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown parameter type"):
        Parameter("x", "float")
    with pytest.raises(ValueError, match="string parameters only"):
        Parameter("x", "integer", enum=("1",))
    with pytest.raises(ValueError, match="declared twice"):
        Toolbox([echo_tool(), echo_tool()])


@pytest.mark.parametrize(
    ("text", "yes"),
    [("Yes.", True), ("yeah, go ahead", True), ("Okay!", True), ("No.", False), ("nope", False),
     ("Don't.", False), ("", False), ("maybe later", False), ("no, yes", False)],
)
def test_only_a_clear_yes_confirms(text: str, yes: bool) -> None:
    from edge_assistant.llm.tool_loop import is_yes

    assert is_yes(text) is yes
