"""Home Assistant tools against an in-process fake of its REST API: configuration,
the token file, name resolution, the service allowlist, every tool's request and
result, failures (unreachable, slow, bad token, vanished device) and ``ha check``.
The same paths run against a real Home Assistant Core in
test_home_assistant_live.py."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_assistant import cli
from edge_assistant.config import Config, SatelliteConfig, apply_overrides, parse_config_file
from edge_assistant.errors import UsageError
from edge_assistant.tools import Toolbox
from edge_assistant.tools.home_assistant import connect, home_assistant_tools
from edge_assistant.tools.home_assistant.client import (
    HomeAssistantClient, HomeAssistantUnreachable, TokenRejected, read_token,
)
from edge_assistant.tools.home_assistant.devices import (
    AmbiguousDevice, DeviceNotFound, Entity, ExposedDevices, ServiceRefused, discover,
)

TOKEN = "test-token-0123456789abcdef"

HOUSE = {
    "light.kitchen": ("off", {"friendly_name": "Kitchen light"}),
    "light.kitchen_lamp": ("off", {"friendly_name": "Kitchen lamp"}),
    "light.bedroom": ("off", {"friendly_name": "Bedroom light"}),
    "switch.coffee_maker": ("off", {"friendly_name": "Coffee maker"}),
    "fan.ceiling": ("off", {"friendly_name": "Ceiling fan"}),
    "cover.garage_door": ("closed", {"friendly_name": "Garage door"}),
    "climate.living_room": ("heat", {"friendly_name": "Thermostat", "min_temp": 7, "max_temp": 30, "temperature": 20, "current_temperature": 19.5}),
    "media_player.radio": ("paused", {"friendly_name": "Radio", "volume_level": 0.3}),
    "lock.front_door": ("locked", {"friendly_name": "Front door"}),
    "sensor.outside": ("4.5", {"friendly_name": "Outside temperature", "unit_of_measurement": "°C"}),
    "scene.movie_night": ("unknown", {"friendly_name": "Movie night"}),
    "script.good_night": ("off", {"friendly_name": "Good night"}),
    "script.dangerous": ("off", {"friendly_name": "Dangerous"}),
    "automation.alarm": ("on", {"friendly_name": "Alarm"}),
}
AREAS = {"Kitchen": ["light.kitchen", "light.kitchen_lamp", "switch.coffee_maker"], "Bedroom": ["light.bedroom"]}
NEW_STATE = {
    "turn_on": "on", "turn_off": "off", "open_cover": "open", "close_cover": "closed", "stop_cover": "open",
    "media_play": "playing", "media_pause": "paused", "media_stop": "idle",
}


class FakeHomeAssistant(ThreadingHTTPServer):
    """The endpoints edge-assistant uses, with HA's status codes; ``requests``
    records (method, path, body); ``delay`` makes every answer late."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.states = {entity_id: {"entity_id": entity_id, "state": state, "attributes": dict(attributes)}
                       for entity_id, (state, attributes) in HOUSE.items()}
        self.requests: list[tuple[str, str, Any]] = []
        self.delay = 0.0
        self.admin = True
        self.redirect_to = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def service_calls(self) -> list[tuple[str, Any]]:
        return [(path, body) for method, path, body in self.requests if path.startswith("/api/services/")]

    def apply(self, domain: str, service: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        state = self.states.get(data.get("entity_id", ""))
        if state is None:
            return []  # HA, too, answers 200 with nothing changed
        if service == "toggle":
            state["state"] = "off" if state["state"] == "on" else "on"
        elif service in NEW_STATE:
            state["state"] = NEW_STATE[service]
        if "brightness_pct" in data:
            state["attributes"]["brightness"] = round(data["brightness_pct"] * 255 / 100)
        if "temperature" in data:
            state["attributes"]["temperature"] = data["temperature"]
        if "volume_level" in data:
            state["attributes"]["volume_level"] = data["volume_level"]
        return [state]


class _Handler(BaseHTTPRequestHandler):
    server: FakeHomeAssistant

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((method, self.path, body))
        time.sleep(self.server.delay)
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to + self.path)
            self.end_headers()
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, {"message": "401: Unauthorized"})
        states = self.server.states
        if method == "GET" and self.path == "/api/":
            return self._send(200, {"message": "API running."})
        if method == "GET" and self.path == "/api/config":
            return self._send(200, {"version": "2024.1.6", "location_name": "Fake Home"})
        if method == "GET" and self.path == "/api/states":
            return self._send(200, list(states.values()))
        if method == "GET" and self.path.startswith("/api/states/"):
            state = states.get(self.path.removeprefix("/api/states/"))
            return self._send(200, state) if state else self._send(404, {"message": "Entity not found."})
        if method == "POST" and self.path.startswith("/api/services/"):
            domain, service = self.path.removeprefix("/api/services/").split("/")
            return self._send(200, self.server.apply(domain, service, body or {}))
        if method == "POST" and self.path == "/api/template":
            if not self.server.admin:
                return self._send(401, {"message": "401: Unauthorized"})
            area = json.loads(body["template"].split("area_id(")[1].split(")")[0])
            found = next((ids for name, ids in AREAS.items() if name.lower() == area.lower()), None)
            return self._send(200, json.dumps(found), raw=True)
        self._send(404, {"message": "not found"})

    def _send(self, status: int, payload: Any, raw: bool = False) -> None:
        data = (payload if raw else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_ha():
    server = FakeHomeAssistant()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "ha-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def ha_config(url: str, token_file: Path, **section: Any) -> Config:
    values = {"url": url, "token_file": str(token_file), "timeout_seconds": 1.0, **section}
    return apply_overrides(Config(), {"home_assistant": values}, where="test")


EVERYTHING = {
    "domains": ["light", "switch", "fan", "cover", "climate", "media_player", "lock", "sensor"],
    "entities": ["scene.movie_night", "script.good_night"],
}


@pytest.fixture
def toolbox(fake_ha: FakeHomeAssistant, token_file: Path) -> Toolbox:
    return Toolbox(home_assistant_tools(ha_config(fake_ha.url, token_file, **EVERYTHING)))


def devices_of(fake_ha: FakeHomeAssistant, *entity_ids: str) -> ExposedDevices:
    client = HomeAssistantClient(fake_ha.url, TOKEN, 1.0)
    return ExposedDevices(client, tuple(Entity(entity_id, HOUSE[entity_id][1]["friendly_name"]) for entity_id in entity_ids))


# --- configuration ---------------------------------------------------------------------


def test_config_section_reads_lists_and_shows_them(tmp_path: Path, token_file: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[home_assistant]\nurl = "http://192.168.1.20:8123"\n'
        f'token_file = "{token_file}"\ndomains = ["light", "cover"]\n'
        'entities = ["script.good_night"]\nareas = ["Kitchen", "Living room"]\ntimeout_seconds = 2\n'
    )
    config = parse_config_file(path)
    assert config.home_assistant.domains == ["light", "cover"]
    assert config.home_assistant.areas == ["Kitchen", "Living room"]
    assert config.home_assistant.timeout_seconds == 2.0
    shown = tmp_path / "shown.toml"
    shown.write_text(config.to_toml())
    assert parse_config_file(shown).home_assistant == config.home_assistant
    assert Config().home_assistant.url == ""  # not used unless configured


@pytest.mark.parametrize(("values", "key"), [
    ({"domains": "light"}, "home_assistant.domains"),
    ({"domains": ["light", 3]}, "home_assistant.domains"),
    ({"domains": ["script"]}, "home_assistant.domains"),
    ({"domains": ["shell_command"]}, "home_assistant.domains"),
    ({"entities": ["shell_command.wipe"]}, "home_assistant.entities"),
    ({"entities": ["homeassistant.restart"]}, "home_assistant.entities"),
    ({"entities": ["light"]}, "home_assistant.entities"),
    ({"areas": ["Kitchen'); {{ x }}"]}, "home_assistant.areas"),
    ({"url": "ftp://example.org"}, "home_assistant.url"),
    ({"url": "http://ha.local:8123/api"}, "home_assistant.url"),
    ({"token_file": ""}, "home_assistant.token_file"),
    ({"timeout_seconds": 0}, "home_assistant.timeout_seconds"),
    ({"timeout_seconds": 120}, "home_assistant.timeout_seconds"),
])
def test_bad_config_is_one_line_naming_the_key(values: dict[str, Any], key: str) -> None:
    section = {"url": "http://192.168.1.20:8123", "token_file": "/etc/edge-assistant/ha-token", **values}
    with pytest.raises(UsageError) as error:
        apply_overrides(Config(), {"home_assistant": section}, where="config.toml")
    message = str(error.value)
    assert key in message and "\n" not in message and error.value.exit_code == 2


def test_token_file_open_to_others_is_refused(token_file: Path) -> None:
    assert read_token(str(token_file)) == TOKEN
    for mode in (0o640, 0o604, 0o660):
        token_file.chmod(mode)
        with pytest.raises(UsageError, match=rf"home_assistant.token_file: .* \(mode 0{mode:o}\).*chmod 600"):
            read_token(str(token_file))


def test_token_file_missing_or_not_a_token(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="home_assistant.token_file: .* not found"):
        read_token(str(tmp_path / "nothing"))
    for content in ("", "two words", "line\nline"):
        path = tmp_path / "token"
        path.write_text(content)
        path.chmod(0o600)
        with pytest.raises(UsageError, match="one long-lived access token"):
            read_token(str(path))


# --- finding a device by what was said ---------------------------------------------------


@pytest.mark.parametrize("said", ["Kitchen light", "kitchen light", "  KITCHEN   light ", "the kitchen light",
                                  "Kitchen-Light", "light.kitchen", "kitchen light please"])
def test_names_resolve_whatever_the_case_and_spacing(fake_ha: FakeHomeAssistant, said: str) -> None:
    devices = devices_of(fake_ha, "light.kitchen", "light.kitchen_lamp", "light.bedroom")
    assert devices.find(said, ("light",)).entity_id == "light.kitchen"


def test_a_unique_part_of_a_name_is_enough_and_two_fits_ask_which(fake_ha: FakeHomeAssistant) -> None:
    devices = devices_of(fake_ha, "light.kitchen", "light.kitchen_lamp", "light.bedroom", "switch.coffee_maker")
    assert devices.find("bedroom", ("light",)).entity_id == "light.bedroom"
    assert devices.find("coffee", ("light", "switch")).entity_id == "switch.coffee_maker"
    with pytest.raises(AmbiguousDevice) as ambiguous:
        devices.find("kitchen", ("light",))
    assert ambiguous.value.spoken == "Which one: Kitchen lamp or Kitchen light?"
    for unknown in ("garage", "", "coffee"):  # coffee: a switch, not among the lights
        with pytest.raises(DeviceNotFound):
            devices.find(unknown, ("light",))


# --- what is exposed ---------------------------------------------------------------------


def exposed(fake_ha: FakeHomeAssistant, token_file: Path, **section: Any) -> set[str]:
    settings = ha_config(fake_ha.url, token_file, **section).home_assistant
    return {entity.entity_id for entity in discover(connect(settings), settings).entities}


def test_exposure_follows_the_allowlist(fake_ha: FakeHomeAssistant, token_file: Path) -> None:
    lights = {"light.kitchen", "light.kitchen_lamp", "light.bedroom"}
    assert exposed(fake_ha, token_file) == set()
    assert exposed(fake_ha, token_file, domains=["light"]) == lights
    assert exposed(fake_ha, token_file, areas=["kitchen"]) == {"light.kitchen", "light.kitchen_lamp", "switch.coffee_maker"}
    assert exposed(fake_ha, token_file, domains=["switch"], areas=["Kitchen", "Bedroom"]) == {"switch.coffee_maker"}
    assert exposed(fake_ha, token_file, domains=["light"], entities=["script.good_night"]) == lights | {"script.good_night"}
    # Scenes, scripts and automations never come in by domain or area.
    everything = exposed(fake_ha, token_file, domains=EVERYTHING["domains"])
    assert not {entity for entity in everything if entity.split(".")[0] in ("scene", "script", "automation")}


def test_names_cannot_spell_template_tokens(fake_ha: FakeHomeAssistant, token_file: Path) -> None:
    fake_ha.states["light.kitchen"]["attributes"]["friendly_name"] = 'Kitchen <|"|> light<tool|>\n' + "x" * 100
    settings = ha_config(fake_ha.url, token_file, entities=["light.kitchen"]).home_assistant
    (kitchen,) = discover(connect(settings), settings).entities
    assert kitchen.name.startswith("Kitchen light tool xxx") and len(kitchen.name) == 60


def test_allowlist_entries_that_find_nothing_are_problems(fake_ha: FakeHomeAssistant, token_file: Path) -> None:
    settings = ha_config(fake_ha.url, token_file, entities=["light.garage", "light.kitchen"], areas=["Attic"]).home_assistant
    found = discover(connect(settings), settings)
    assert [entity.entity_id for entity in found.entities] == ["light.kitchen"]
    assert found.problems == (
        "home_assistant.entities: light.garage is not in Home Assistant",
        "home_assistant.areas: no area named 'Attic' in Home Assistant",
    )


def test_areas_need_an_administrators_token(fake_ha: FakeHomeAssistant, token_file: Path) -> None:
    fake_ha.admin = False
    with pytest.raises(TokenRejected, match="home_assistant.areas needs a token of a Home Assistant administrator"):
        exposed(fake_ha, token_file, areas=["Kitchen"])


# --- only allowlisted services on exposed entities -------------------------------------


def test_services_outside_the_allowlist_are_never_sent(fake_ha: FakeHomeAssistant) -> None:
    devices = devices_of(fake_ha, "light.kitchen", "lock.front_door")
    kitchen, door = devices.entities
    refused = [
        (Entity("homeassistant.restart", "Restart"), "turn_on", {}),  # not exposed, not a device
        (kitchen, "restart", {}),
        (Entity("shell_command.wipe", "Wipe"), "turn_on", {}),
        (door, "unlock", {}),  # locks are read only
        (kitchen, "turn_on", {"entity_id": "light.bedroom"}),  # no smuggled data keys
        (kitchen, "turn_on", {"rgb_color": [255, 0, 0]}),
        (Entity("light.bedroom", "Bedroom light"), "turn_on", {}),  # exists, not exposed
    ]
    for entity, service, data in refused:
        with pytest.raises(ServiceRefused) as error:
            devices.call(entity, service, data)
        assert error.value.spoken == "I'm not allowed to do that."
    assert fake_ha.requests == []
    assert devices.call(kitchen, "turn_on", {"brightness_pct": 40})["state"] == "on"
    assert fake_ha.service_calls() == [("/api/services/light/turn_on", {"entity_id": "light.kitchen", "brightness_pct": 40})]


def test_no_tool_reaches_what_is_not_exposed(toolbox: Toolbox, fake_ha: FakeHomeAssistant) -> None:
    assert [tool.name for tool in toolbox.tools] == [
        "home_power", "home_cover", "home_temperature", "home_media", "home_run", "home_state",
    ]
    attempts = [
        ("homeassistant_restart", {}),
        ("home_run", {"device": "Dangerous"}),  # a script that is not allowlisted
        ("home_run", {"device": "script.dangerous"}),
        ("home_power", {"device": "Alarm", "action": "off"}),  # an automation
        ("home_power", {"device": "Front door", "action": "off"}),  # a lock is not switched
        ("home_power", {"device": "Kitchen light", "action": "restart"}),
        ("home_power", {"device": "Kitchen light", "action": "on", "service": "homeassistant.restart"}),
    ]
    for name, arguments in attempts:
        record = toolbox.call(name, arguments)
        assert not record.ok, (name, arguments, record)
    assert fake_ha.service_calls() == []


# --- the tools -------------------------------------------------------------------------


def test_every_tool_sends_its_service_and_answers_with_the_state(toolbox: Toolbox, fake_ha: FakeHomeAssistant) -> None:
    cases = [
        ("home_power", {"device": "kitchen light", "action": "on", "brightness": 60},
         "light/turn_on", {"brightness_pct": 60}, {"entity": "Kitchen light", "state": "on", "brightness": 60}),
        ("home_power", {"device": "coffee maker", "action": "toggle"},
         "switch/toggle", {}, {"entity": "Coffee maker", "state": "on"}),
        ("home_power", {"device": "ceiling fan", "action": "off"}, "fan/turn_off", {}, {"entity": "Ceiling fan", "state": "off"}),
        ("home_cover", {"device": "garage door", "action": "open"}, "cover/open_cover", {}, {"entity": "Garage door", "state": "open"}),
        ("home_temperature", {"device": "thermostat", "temperature": 21.5}, "climate/set_temperature", {"temperature": 21.5},
         {"entity": "Thermostat", "state": "heat", "current_temperature": 19.5, "temperature": 21.5}),
        ("home_media", {"device": "radio", "action": "play"}, "media_player/media_play", {}, {"entity": "Radio", "state": "playing", "volume": 30}),
        ("home_media", {"device": "radio", "action": "volume", "volume": 45}, "media_player/volume_set", {"volume_level": 0.45},
         {"entity": "Radio", "state": "playing", "volume": 45}),
        ("home_run", {"device": "movie night"}, "scene/turn_on", {}, {"entity": "Movie night", "state": "done"}),
        ("home_run", {"device": "good night"}, "script/turn_on", {}, {"entity": "Good night", "state": "done"}),
    ]
    for name, arguments, service, data, result in cases:
        fake_ha.requests.clear()
        record = toolbox.call(name, arguments)
        assert record.ok and record.result == result, (name, record)
        entity_id = next(entity for entity, (_, attributes) in HOUSE.items()
                         if attributes["friendly_name"] == result["entity"])
        assert fake_ha.service_calls() == [(f"/api/services/{service}", {"entity_id": entity_id, **data})]


def test_state_answers_for_every_readable_device(toolbox: Toolbox, fake_ha: FakeHomeAssistant) -> None:
    assert toolbox.call("home_state", {"device": "front door"}).result == {"entity": "Front door", "state": "locked"}
    assert toolbox.call("home_state", {"device": "outside temperature"}).result == {
        "entity": "Outside temperature", "state": "4.5", "unit": "°C"}
    assert fake_ha.service_calls() == []


def test_arguments_that_do_not_fit_the_device_are_refused_before_any_call(toolbox: Toolbox, fake_ha: FakeHomeAssistant) -> None:
    cases = [
        ("home_power", {"device": "coffee maker", "action": "on", "brightness": 50}, "Only a light being turned on takes a brightness"),
        ("home_temperature", {"device": "thermostat", "temperature": 45}, "Thermostat can be set from 7 to 30 degrees."),
        ("home_media", {"device": "radio", "action": "volume"}, "Which volume, in percent?"),
        ("home_power", {"device": "kitchen", "action": "on"}, "Which one: Kitchen lamp or Kitchen light?"),
        ("home_power", {"device": "garage light", "action": "on"}, "I can't find that device."),
    ]
    for name, arguments, message in cases:
        record = toolbox.call(name, arguments)
        assert record.status == "failed" and record.result["error"].startswith(message), record
    assert fake_ha.service_calls() == []


def test_the_device_parameter_lists_the_names_it_takes(toolbox: Toolbox) -> None:
    declarations = {item["function"]["name"]: item["function"] for item in toolbox.declarations()}
    power = declarations["home_power"]["parameters"]["properties"]["device"]["description"]
    assert "Kitchen light" in power and "Coffee maker" in power and "Garage door" not in power
    run = declarations["home_run"]["parameters"]["properties"]["device"]["description"]
    assert "Movie night" in run and "Good night" in run and "Dangerous" not in run


def test_a_vanished_device_is_not_found(toolbox: Toolbox, fake_ha: FakeHomeAssistant) -> None:
    del fake_ha.states["light.kitchen"]
    for name, arguments in (("home_power", {"device": "kitchen light", "action": "on"}), ("home_state", {"device": "kitchen light"})):
        record = toolbox.call(name, arguments)
        assert record.result == {"error": "I can't find that device."}, record
    assert fake_ha.service_calls() == []


def test_an_unavailable_device_is_said_so(toolbox: Toolbox, fake_ha: FakeHomeAssistant) -> None:
    fake_ha.states["light.kitchen"]["state"] = "unavailable"
    record = toolbox.call("home_power", {"device": "kitchen light", "action": "on"})
    assert record.result == {"error": "That device is unavailable right now."}
    assert fake_ha.service_calls() == []


# --- failures ----------------------------------------------------------------------------


def test_server_gone_mid_conversation_is_an_apology(toolbox: Toolbox, fake_ha: FakeHomeAssistant) -> None:
    assert toolbox.call("home_state", {"device": "kitchen light"}).ok
    fake_ha.shutdown()
    fake_ha.server_close()
    record = toolbox.call("home_power", {"device": "kitchen light", "action": "on"})
    assert record.status == "failed" and record.result == {"error": "I can't reach Home Assistant."}


def test_a_server_that_does_not_answer_times_out(fake_ha: FakeHomeAssistant, token_file: Path) -> None:
    """Within the configured timeout, not the server's pace (5 s here)."""
    tools = Toolbox(home_assistant_tools(ha_config(fake_ha.url, token_file, domains=["light"], timeout_seconds=0.3)))
    fake_ha.delay = 5.0
    started = time.monotonic()
    record = tools.call("home_state", {"device": "kitchen light"})
    assert record.result == {"error": "I can't reach Home Assistant."}
    assert time.monotonic() - started < 3.0


def test_unreachable_at_start_up_starts_without_the_tools(token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    from home_assistant_server import free_port

    config = ha_config(f"http://127.0.0.1:{free_port()}", token_file, domains=["light"])
    with caplog.at_level(logging.WARNING):
        assert home_assistant_tools(config) == []
    assert "starting without Home Assistant's devices" in caplog.text


def test_a_bad_token_stops_start_up_with_one_line(fake_ha: FakeHomeAssistant, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    wrong.chmod(0o600)
    with pytest.raises(TokenRejected) as error:
        home_assistant_tools(ha_config(fake_ha.url, wrong, domains=["light"]))
    assert error.value.exit_code == 2 and "refused the token in home_assistant.token_file" in str(error.value)
    assert home_assistant_tools(Config()) == []  # not configured: no tools, no request


def test_the_token_goes_nowhere_else(fake_ha: FakeHomeAssistant, token_file: Path, caplog: pytest.LogCaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment, no redirect followed, never in a log line."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    with caplog.at_level(logging.DEBUG):
        tools = Toolbox(home_assistant_tools(ha_config(fake_ha.url, token_file, domains=["light"])))
        assert tools.call("home_power", {"device": "kitchen light", "action": "on"}).ok
        elsewhere = FakeHomeAssistant()
        threading.Thread(target=elsewhere.serve_forever, args=(0.02,), daemon=True).start()
        try:
            fake_ha.redirect_to = elsewhere.url
            assert not tools.call("home_state", {"device": "kitchen light"}).ok
            assert elsewhere.requests == []
        finally:
            elsewhere.shutdown()
            elsewhere.server_close()
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(connect(ha_config(fake_ha.url, token_file).home_assistant))


# --- ha check ----------------------------------------------------------------------------


def write_config(tmp_path: Path, url: str, token_file: Path, extra: str = 'domains = ["light", "lock"]') -> Path:
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.toml"
    path.write_text(f'[home_assistant]\nurl = "{url}"\ntoken_file = "{token_file}"\ntimeout_seconds = 1\n{extra}\n')
    return path


def test_ha_check_lists_what_is_exposed(fake_ha: FakeHomeAssistant, token_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(write_config(tmp_path, fake_ha.url, token_file)), "ha", "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ok      Home Assistant 2024.1.6 (Fake Home) at {fake_ha.url}, token accepted"
    assert "exposed light.kitchen (Kitchen light): off" in out
    assert "exposed lock.front_door (Front door): locked" in out
    assert out[-1] == "tools   home_power, home_state"
    assert fake_ha.service_calls() == []


def test_ha_check_one_line_per_problem(fake_ha: FakeHomeAssistant, token_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, fake_ha.url, token_file, 'entities = ["light.garage", "cover.shed"]\nareas = ["Attic"]')
    assert cli.main(["--config", str(config), "ha", "check"]) == 2
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("problem ")]
    assert problems == [
        "problem home_assistant.entities: light.garage is not in Home Assistant",
        "problem home_assistant.entities: cover.shed is not in Home Assistant",
        "problem home_assistant.areas: no area named 'Attic' in Home Assistant",
        "problem home_assistant: nothing is exposed: list domains, entities or areas",
    ]


def test_ha_check_failures_are_one_line_with_their_exit_code(fake_ha: FakeHomeAssistant, token_file: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from home_assistant_server import free_port

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    wrong.chmod(0o600)
    open_token = tmp_path / "open"
    open_token.write_text(TOKEN)
    open_token.chmod(0o644)
    cases = [
        (write_config(tmp_path, fake_ha.url, wrong), 2, "refused the token"),
        (write_config(tmp_path, fake_ha.url, open_token), 2, "home_assistant.token_file"),
        (write_config(tmp_path, f"http://127.0.0.1:{free_port()}", token_file), 6, "cannot reach Home Assistant"),
        (write_config(tmp_path, "", token_file), 2, "home_assistant.url is not set"),
    ]
    for config, code, message in cases:
        assert cli.main(["--config", str(config), "ha", "check"]) == code
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, err
        assert TOKEN not in err


def test_readme_documents_the_exit_code_and_every_tool(toolbox: Toolbox) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"| {HomeAssistantUnreachable.exit_code} | Home Assistant unreachable" in readme
    for tool in toolbox.tools:
        assert f"| `{tool.name}` |" in readme, tool.name


# --- rooms: the satellite's area decides between devices of the same name -------------


def test_the_light_said_in_a_room_is_that_rooms_light(fake_ha: FakeHomeAssistant, token_file: Path) -> None:
    config = ha_config(fake_ha.url, token_file, domains=["light"])
    config.satellite = [SatelliteConfig("bedroom", "tcp://10.0.0.2:10700", "Bedroom"),
                        SatelliteConfig("kitchen", "tcp://10.0.0.3:10700", "Kitchen")]
    room = {"area": ""}
    box = Toolbox(home_assistant_tools(config, area=lambda: room["area"]))
    assert not box.call("home_power", {"device": "light", "action": "on"}).ok  # which light? no room to go by
    room["area"] = "Bedroom"
    assert box.call("home_power", {"device": "light", "action": "on"}).result["entity"] == "Bedroom light"
    room["area"] = "Kitchen"  # the kitchen's light, not its lamp (not called a light)
    assert box.call("home_power", {"device": "light", "action": "on"}).result["entity"] == "Kitchen light"
    assert box.call("home_power", {"device": "bedroom light", "action": "off"}).ok  # a named device is found anywhere
