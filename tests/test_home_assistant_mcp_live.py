"""Home Assistant over MCP (``home_assistant.api = "mcp"``) against a real Home
Assistant 2025.4.4 with its ``mcp_server`` integration on 127.0.0.1
(tests/home_assistant_mcp_server.py; Python 3.13 from pyenv, installed once by
scripts/ha_mcp_venv.sh). Skips, saying why, where there is no Python 3.13."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_assistant import cli
from edge_assistant.config import Config, apply_overrides
from edge_assistant.llm.tool_calls import parse_tool_calls, render_tool_call
from edge_assistant.tools.mcp.connection import wait_until
from edge_assistant.tools.setup import ToolSet, build_tools
from home_assistant_mcp_server import McpHomeAssistantServer, ensure_mcp_home_assistant

pytestmark = pytest.mark.slow


def start_server(directory: Path) -> McpHomeAssistantServer:
    bin_dir, why = ensure_mcp_home_assistant()
    if bin_dir is None:
        pytest.skip(why)
    return McpHomeAssistantServer(bin_dir, directory).start()


@pytest.fixture(scope="module")
def home_assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpHomeAssistantServer]:
    server = start_server(tmp_path_factory.mktemp("home-assistant-mcp"))
    try:
        yield server
    finally:
        server.stop()


def settings(server: McpHomeAssistantServer, directory: Path, token: str | None = None, **section: object) -> Config:
    token_file = directory / "ha-token"
    token_file.write_text((token or server.token) + "\n")
    token_file.chmod(0o600)
    values = {"url": server.url, "token_file": str(token_file), "api": "mcp", "timeout_seconds": 3.0, **section}
    config = apply_overrides(Config(), {"home_assistant": values, "tools": {"state_dir": str(directory / "state")}}, "test")
    config.source = "test"
    return config


def config_file(config: Config, directory: Path) -> Path:
    path = directory / "config.toml"
    path.write_text(config.to_toml())
    return path


@pytest.fixture
def toolset(home_assistant: McpHomeAssistantServer, tmp_path: Path) -> Iterator[ToolSet]:
    tools = build_tools(settings(home_assistant, tmp_path))
    try:
        yield tools
    finally:
        tools.close()


def voice(toolset: ToolSet, tool: str, **arguments: object):
    """A call as the model writes it, read back as the tool loop reads it."""
    (call,) = parse_tool_calls(render_tool_call(tool, arguments))
    return toolset.toolbox.call(call.name, call.arguments)


def test_a_light_on_and_off_by_voice_shaped_calls(toolset: ToolSet, home_assistant: McpHomeAssistantServer) -> None:
    names = {tool.name for tool in toolset.toolbox.tools}
    assert {"HassTurnOn", "HassTurnOff", "HassLightSet", "GetLiveContext", "get_date_time"} <= names
    assert "home_power" not in names  # REST tools are not built with api = "mcp"
    home_assistant.call("input_boolean", "turn_off", "input_boolean.kitchen_power")
    record = voice(toolset, "HassTurnOn", name="Kitchen light")
    assert record.status == "ok", record
    assert '"success": [{"name": "Kitchen light", "type": "entity", "id": "light.kitchen"}]' in record.result["result"]
    assert home_assistant.state("light.kitchen") == "on"
    assert voice(toolset, "HassTurnOff", name="Kitchen light").status == "ok"
    assert home_assistant.state("light.kitchen") == "off"
    context = voice(toolset, "GetLiveContext")
    assert context.status == "ok" and "Kitchen light" in context.result["result"]


def test_a_tool_outside_the_allowlist_is_refused_before_any_request(
    home_assistant: McpHomeAssistantServer, tmp_path: Path
) -> None:
    toolset = build_tools(settings(home_assistant, tmp_path, tools=["HassTurnOff"]))
    try:
        assert "HassTurnOn" not in {tool.name for tool in toolset.toolbox.tools}
        home_assistant.call("input_boolean", "turn_off", "input_boolean.bedroom_power")
        connection = toolset.toolbox.get("HassTurnOff").connection
        os.kill(home_assistant.process.pid, signal.SIGSTOP)  # any request would now hang
        try:
            started = time.monotonic()
            record = voice(toolset, "HassTurnOn", name="Bedroom light")
            refused_in = time.monotonic() - started
        finally:
            os.kill(home_assistant.process.pid, signal.SIGCONT)
        assert record.status == "rejected" and record.result == {"error": "no tool named 'HassTurnOn'"}
        assert refused_in < 0.5 and connection.connected
        assert home_assistant.state("light.bedroom") == "off"
        # An argument the schema does not declare (HA's optional list "domain") never goes out either.
        assert voice(toolset, "HassTurnOff", name="Bedroom light", domain="lock").status == "rejected"
    finally:
        toolset.close()


def test_ha_check_lists_the_mcp_tools_and_the_live_context(
    home_assistant: McpHomeAssistantServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(settings(home_assistant, tmp_path), tmp_path)
    assert cli.main(["--config", str(path), "ha", "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"ok      Home Assistant MCP server (home-assistant 1.5.0, sse) at {home_assistant.url}, "
                      "token accepted")
    assert any(line.startswith("allowed HassTurnOn(name, area, floor") for line in out)
    assert any(line.startswith("-       HassCancelAllTimers(") for line in out)
    assert "exposed Kitchen light (light): off, area Kitchen" in out or "exposed Kitchen light (light): on, area Kitchen" in out
    path.write_text(settings(home_assistant, tmp_path, tools=["HassTurnOn", "HassOpenEverything"]).to_toml())
    assert cli.main(["--config", str(path), "ha", "check"]) == 2
    assert capsys.readouterr().out.splitlines()[-1] == "problem home_assistant.tools: HassOpenEverything is not offered by Home Assistant"


def test_the_server_stopped_mid_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = start_server(tmp_path / "home-assistant")
    try:
        config = settings(server, tmp_path)
        toolset = build_tools(config)
        assert voice(toolset, "HassTurnOn", name="Kitchen light").status == "ok"
    finally:
        server.stop()
    try:
        started = time.monotonic()
        record = voice(toolset, "HassTurnOff", name="Kitchen light")
        assert record.status == "failed" and record.result == {"error": "Home Assistant is not answering."}
        assert time.monotonic() - started < 8
        again = voice(toolset, "HassTurnOff", name="Kitchen light")  # while it reconnects: at once
        assert again.result == {"error": "Home Assistant is not answering."} and again.ms < 500
    finally:
        toolset.close()
    restarted = build_tools(config)  # a restart while it is down: HA's tools from their last listing, no crash
    try:
        assert restarted.toolbox.declarations() == toolset.toolbox.declarations()  # the same system prompt
        assert restarted.problems() == ["Home Assistant: unreachable"]
        record = voice(restarted, "HassTurnOff", name="Kitchen light")
        assert record.status == "failed" and record.result == {"error": "Home Assistant is not answering."}
        assert cli.main(["--config", str(config_file(config, tmp_path)), "ha", "check"]) == 6
        err = capsys.readouterr().err.strip()
        assert "cannot reach Home Assistant's MCP server" in err and "\n" not in err
        server.start()  # Home Assistant comes up after the assistant, with the same tools: nothing is declared again
        assert wait_until(lambda: restarted.outdated, 120) and not restarted.refresh()
        assert voice(restarted, "HassTurnOff", name="Kitchen light").status == "ok"
        assert server.state("light.kitchen") == "off"
    finally:
        restarted.close()
        server.stop()


def test_a_wrong_token(home_assistant: McpHomeAssistantServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The assistant runs on without HA's tools and says why (STATUS=, the
    journal); once the token file holds a good token they are declared."""
    config = settings(home_assistant, tmp_path, token="wrong" + home_assistant.token[5:])
    toolset = build_tools(config)
    try:
        assert toolset.toolbox.get("HassTurnOn") is None  # never listed: nothing to declare
        assert toolset.problems() == ["Home Assistant: access token refused"]
        assert cli.main(["--config", str(config_file(config, tmp_path)), "ha", "check"]) == 2
        err = capsys.readouterr().err.strip()
        assert "refused the token" in err and "\n" not in err and home_assistant.token[10:] not in err
        settings(home_assistant, tmp_path)  # the good token into the same file
        assert wait_until(lambda: toolset.outdated, 30) and toolset.refresh()
        assert toolset.problems() == []
        home_assistant.call("input_boolean", "turn_off", "input_boolean.kitchen_power")
        assert voice(toolset, "HassTurnOn", name="Kitchen light").status == "ok"
        assert home_assistant.state("light.kitchen") == "on"
    finally:
        toolset.close()


def test_a_spoken_request_switches_the_light_through_the_model_turn(
    twin, home_assistant: McpHomeAssistantServer, tmp_path: Path
) -> None:
    """The whole path with scripted model output: HA's MCP tools are declared to
    the real engine through the model's chat template, the model's call runs
    against the server, and the reply after it is what is spoken."""
    import numpy as np

    from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
    from edge_assistant.llm.tool_loop import ToolUse
    from edge_assistant.turn import run_turn
    from scripted import ScriptedEngine

    toolset = build_tools(settings(home_assistant, tmp_path))
    home_assistant.call("input_boolean", "turn_off", "input_boolean.kitchen_power")
    call = render_tool_call("HassTurnOn", {"name": "Kitchen light"})
    model = ScriptedEngine(twin.model, twin.mmproj, call + "<|tool_response>The kitchen light is on.",
                           tools=toolset.toolbox.declarations())
    try:
        assert "declaration:HassTurnOn{" in model.engine.chat_format.system_block("", model.engine.tools)
        question = Audio(np.random.default_rng(0).normal(0, 0.05, MODEL_SAMPLE_RATE).astype(np.float32), MODEL_SAMPLE_RATE)
        result = run_turn(model.engine, question, None, 0.0, ToolUse(toolset.toolbox))
    finally:
        model.close()
        toolset.close()
    (record,) = result.as_dict()["tool_calls"]
    assert record["name"] == "HassTurnOn" and record["status"] == "ok", record
    assert home_assistant.state("light.kitchen") == "on"
    assert result.sentences == ["The kitchen light is on."]


def test_a_wrong_token_after_a_good_run(home_assistant: McpHomeAssistantServer, tmp_path: Path) -> None:
    """HA's tools are declared from their last listing, so a call is answered
    with the refusal (spoken by the model, or the apology after it); the token
    is not sent again for it. Once the file holds a good token, the same tools
    need no new system prompt."""
    good_run = build_tools(settings(home_assistant, tmp_path))
    good_run.close()
    toolset = build_tools(settings(home_assistant, tmp_path, token="wrong" + home_assistant.token[5:]))
    try:
        assert toolset.toolbox.declarations() == good_run.toolbox.declarations()
        assert toolset.problems() == ["Home Assistant: access token refused"]
        home_assistant.call("input_boolean", "turn_off", "input_boolean.kitchen_power")
        record = voice(toolset, "HassTurnOn", name="Kitchen light")
        assert record.status == "failed" and record.result == {"error": "Home Assistant refused my access token."}
        assert home_assistant.state("light.kitchen") == "off"
        settings(home_assistant, tmp_path)  # the good token into the same file
        assert wait_until(lambda: toolset.outdated, 30) and not toolset.refresh()
        assert voice(toolset, "HassTurnOn", name="Kitchen light").status == "ok"
        assert home_assistant.state("light.kitchen") == "on"
    finally:
        toolset.close()
