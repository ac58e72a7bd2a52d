"""The Home Assistant tools against a real Home Assistant Core 2024.1.6 on
127.0.0.1 (tests/home_assistant_server.py: installed once into a cached venv,
about 90 s and 380 MB; started in seconds; offline).

The devices are template entities backed by input booleans, so every state the
tools change is read back from the server itself.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_assistant import cli
from edge_assistant.config import Config, apply_overrides
from edge_assistant.tools import Toolbox
from edge_assistant.tools.home_assistant import connect, home_assistant_tools
from edge_assistant.tools.home_assistant.client import TokenRejected
from edge_assistant.tools.home_assistant.devices import Entity, ExposedDevices, ServiceRefused, discover
from home_assistant_server import HomeAssistantServer, ensure_home_assistant

pytestmark = pytest.mark.slow

EXPOSED = ["light.kitchen", "switch.coffee_maker", "cover.garage_door", "lock.front_door",
           "scene.movie_night", "script.good_night"]


def start_server(directory: Path) -> HomeAssistantServer:
    return HomeAssistantServer(ensure_home_assistant(), directory).start()


@pytest.fixture(scope="module")
def home_assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistantServer]:
    server = start_server(tmp_path_factory.mktemp("home-assistant"))
    try:
        yield server
    finally:
        server.stop()


def token_file(directory: Path, token: str) -> Path:
    path = directory / "ha-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def settings(server: HomeAssistantServer, directory: Path, token: str | None = None, **section: object) -> Config:
    values = {"url": server.url, "token_file": str(token_file(directory, token or server.token)),
              "timeout_seconds": 1.0, "entities": EXPOSED, **section}
    return apply_overrides(Config(), {"home_assistant": values}, where="test")


def config_file(config: Config, directory: Path) -> Path:
    path = directory / "config.toml"
    path.write_text(config.to_toml())
    return path


@pytest.fixture
def toolbox(home_assistant: HomeAssistantServer, tmp_path: Path) -> Toolbox:
    return Toolbox(home_assistant_tools(settings(home_assistant, tmp_path)))


def test_a_light_on_and_off_by_its_name_and_its_state(toolbox: Toolbox, home_assistant: HomeAssistantServer) -> None:
    home_assistant.call("input_boolean", "turn_off", "input_boolean.kitchen_power")
    on = toolbox.call("home_power", {"device": "the kitchen light", "action": "on"})
    assert on.ok and on.result == {"entity": "Kitchen light", "state": "on"}, on
    assert home_assistant.state("light.kitchen") == "on"
    assert toolbox.call("home_state", {"device": "Kitchen light"}).result == {"entity": "Kitchen light", "state": "on"}
    off = toolbox.call("home_power", {"device": "Kitchen Light", "action": "off"})
    assert off.result == {"entity": "Kitchen light", "state": "off"}
    assert home_assistant.state("light.kitchen") == "off"
    assert toolbox.call("home_state", {"device": "front door"}).result == {"entity": "Front door", "state": "locked"}


def test_switch_cover_scene_and_script(toolbox: Toolbox, home_assistant: HomeAssistantServer) -> None:
    assert toolbox.call("home_power", {"device": "coffee maker", "action": "toggle"}).ok
    assert home_assistant.state("input_boolean.coffee_power") == "on"
    assert toolbox.call("home_cover", {"device": "garage door", "action": "open"}).result == {"entity": "Garage door", "state": "open"}
    assert toolbox.call("home_run", {"device": "movie night"}).result == {"entity": "Movie night", "state": "done"}
    assert home_assistant.state("input_boolean.movie_mode") == "on"
    home_assistant.call("input_boolean", "turn_on", "input_boolean.kitchen_power")
    assert toolbox.call("home_run", {"device": "good night"}).ok
    time.sleep(0.5)  # a script runs on after the call returns
    assert home_assistant.state("input_boolean.kitchen_power") == "off"


def test_an_entity_that_is_not_exposed_is_never_called(toolbox: Toolbox, home_assistant: HomeAssistantServer) -> None:
    for name, arguments in (("home_power", {"device": "Bedroom light", "action": "on"}),
                            ("home_power", {"device": "light.bedroom", "action": "on"}),
                            ("home_run", {"device": "Dangerous"})):
        record = toolbox.call(name, arguments)
        assert record.result == {"error": "I can't find that device."}, record
    assert home_assistant.state("light.bedroom") == "off"
    assert home_assistant.state("input_boolean.bedroom_power") == "off"


def test_a_refused_service_is_never_sent(home_assistant: HomeAssistantServer, tmp_path: Path) -> None:
    ha = settings(home_assistant, tmp_path).home_assistant
    client = connect(ha)
    devices = ExposedDevices(client, discover(client, ha).entities)
    kitchen = devices.find("kitchen light", ("light",))
    for entity, service in ((Entity("homeassistant.restart", "Restart"), "turn_on"), (kitchen, "restart"),
                            (devices.find("front door", ("lock",)), "unlock")):
        with pytest.raises(ServiceRefused):
            devices.call(entity, service)
    assert not Toolbox(home_assistant_tools(settings(home_assistant, tmp_path))).call("homeassistant_restart", {}).ok
    assert client.api_status() == {"message": "API running."}  # still the same, running server
    assert home_assistant.process is not None and home_assistant.process.poll() is None
    assert home_assistant.state("lock.front_door") == "locked"


def test_areas_come_from_the_servers_registry(home_assistant: HomeAssistantServer, tmp_path: Path) -> None:
    ha = settings(home_assistant, tmp_path, entities=[], areas=["kitchen", "Attic"]).home_assistant
    found = discover(connect(ha), ha)
    assert {entity.entity_id for entity in found.entities} == {"light.kitchen", "switch.coffee_maker"}
    assert found.problems == ("home_assistant.areas: no area named 'Attic' in Home Assistant",)


def test_a_paused_server_times_out_with_an_apology(toolbox: Toolbox, home_assistant: HomeAssistantServer) -> None:
    assert home_assistant.process is not None
    os.kill(home_assistant.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        record = toolbox.call("home_power", {"device": "kitchen light", "action": "on"})
        waited = time.monotonic() - started
    finally:
        os.kill(home_assistant.process.pid, signal.SIGCONT)
    assert record.result == {"error": "I can't reach Home Assistant."}
    assert waited < 10, f"a 1 s timeout took {waited:.1f} s"


def test_the_server_stopped_mid_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = start_server(tmp_path / "home-assistant")
    try:
        config = settings(server, tmp_path)
        tools = Toolbox(home_assistant_tools(config))
        assert tools.call("home_power", {"device": "kitchen light", "action": "on"}).ok
    finally:
        server.stop()
    record = tools.call("home_power", {"device": "kitchen light", "action": "off"})
    assert record.status == "failed" and record.result == {"error": "I can't reach Home Assistant."}
    assert home_assistant_tools(config) == []  # a restart while it is down: no tools, no crash
    capsys.readouterr()
    assert cli.main(["--config", str(config_file(config, tmp_path)), "ha", "check"]) == 6
    # Only the command's own lines: a fake server thread of an earlier test in this
    # process may still log a dropped connection to stderr meanwhile.
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edge-assistant")]
    assert len(err) == 1 and "cannot reach Home Assistant" in err[0]


def test_a_wrong_token(home_assistant: HomeAssistantServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = settings(home_assistant, tmp_path, token="wrong" + home_assistant.token[5:])
    with pytest.raises(TokenRejected, match="refused the token in home_assistant.token_file"):
        home_assistant_tools(config)
    assert cli.main(["--config", str(config_file(config, tmp_path)), "ha", "check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "refused the token" in err and "\n" not in err and home_assistant.token[10:] not in err


def test_ha_check(home_assistant: HomeAssistantServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = settings(home_assistant, tmp_path, entities=[*EXPOSED, "light.garage"])
    path = config_file(config, tmp_path)
    assert cli.main(["--config", str(path), "ha", "check"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok      Home Assistant 2024.1.6 (Test Home) at {home_assistant.url}")
    assert {line.split()[1] for line in out if line.startswith("exposed ")} == set(EXPOSED)
    assert "tools   home_power, home_cover, home_run, home_state" in out
    assert out[-1] == "problem home_assistant.entities: light.garage is not in Home Assistant"
    path.write_text(settings(home_assistant, tmp_path).to_toml())
    assert cli.main(["--config", str(path), "ha", "check"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("problem")]


def test_a_spoken_request_switches_the_light_through_the_model_turn(
    twin, home_assistant: HomeAssistantServer, tmp_path: Path
) -> None:
    """The whole path with scripted model output: the tools the assistant builds
    from its config are declared to the real engine, the model's call runs
    against the server, and the reply after it is what is spoken."""
    import numpy as np

    from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
    from edge_assistant.llm.tool_calls import render_tool_call
    from edge_assistant.llm.tool_loop import ToolUse
    from edge_assistant.tools.setup import build_tools
    from edge_assistant.turn import run_turn
    from scripted import ScriptedEngine

    config = settings(home_assistant, tmp_path)
    config.tools.state_dir = str(tmp_path / "state")
    toolbox = build_tools(config).toolbox
    assert {"home_power", "home_state", "get_date_time"} <= {tool.name for tool in toolbox.tools}
    home_assistant.call("input_boolean", "turn_off", "input_boolean.kitchen_power")
    call = render_tool_call("home_power", {"device": "kitchen light", "action": "on"})
    model = ScriptedEngine(twin.model, twin.mmproj, call + "<|tool_response>The kitchen light is on.",
                           tools=toolbox.declarations())
    try:
        question = Audio(np.random.default_rng(0).normal(0, 0.05, MODEL_SAMPLE_RATE).astype(np.float32), MODEL_SAMPLE_RATE)
        result = run_turn(model.engine, question, None, 0.0, ToolUse(toolbox))
    finally:
        model.close()
    (record,) = result.as_dict()["tool_calls"]
    assert record["name"] == "home_power" and record["status"] == "ok", record
    assert record["result"] == {"entity": "Kitchen light", "state": "on"}
    assert home_assistant.state("light.kitchen") == "on"
    assert result.sentences == ["The kitchen light is on."]
