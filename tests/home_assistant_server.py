"""A real Home Assistant Core on 127.0.0.1 for the integration tests.

``ensure_home_assistant()`` installs ``homeassistant==2024.1.6`` (the newest for
Python 3.11) into a venv of its own, cached in
``$EDGE_ASSISTANT_HA_CACHE`` (default ``~/.cache/edge-assistant/home-assistant/``):
HA pins aiohttp and pydantic, so it cannot share the test venv. pip is held to
the ``package_constraints.txt`` inside HA's own wheel (unconstrained it spends a
minute resolving). A marker file written last marks a finished install, so an
interrupted one is thrown away and redone, and a file lock keeps two test runs
from installing at once.

``HomeAssistantServer.start()`` writes an offline configuration (``http`` on a
free port, ``api``, ``auth``, ``config``, input booleans, template entities, a
scene, scripts), creates a user with ``hass --script auth``, starts ``hass``,
waits for ``/api/``, gets an access token through the login flow, and puts
entities into areas through the websocket API. ``stop()`` ends it by PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

HA_VERSION = "2024.1.6"
USER, PASSWORD = "edge", "edge-test-password"
CLIENT_ID_PATH = "/"
START_TIMEOUT_S = 120.0

# What the tests find in the house: friendly names, areas and the backing booleans.
CONFIGURATION = """\
homeassistant:
  name: Test Home
  unit_system: metric
  time_zone: UTC
  latitude: 0
  longitude: 0
  elevation: 0
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
auth:
config:
websocket_api:
input_boolean:
  kitchen_power:
    name: Kitchen power
  bedroom_power:
    name: Bedroom power
  coffee_power:
    name: Coffee power
  garage_open:
    name: Garage open
  front_door_locked:
    name: Front door locked
    initial: true
  movie_mode:
    name: Movie mode
light:
  - platform: template
    lights:
      kitchen:
        unique_id: test_kitchen_light
        friendly_name: Kitchen light
        value_template: "{{{{ is_state('input_boolean.kitchen_power', 'on') }}}}"
        turn_on:
          service: input_boolean.turn_on
          target:
            entity_id: input_boolean.kitchen_power
        turn_off:
          service: input_boolean.turn_off
          target:
            entity_id: input_boolean.kitchen_power
      bedroom:
        unique_id: test_bedroom_light
        friendly_name: Bedroom light
        value_template: "{{{{ is_state('input_boolean.bedroom_power', 'on') }}}}"
        turn_on:
          service: input_boolean.turn_on
          target:
            entity_id: input_boolean.bedroom_power
        turn_off:
          service: input_boolean.turn_off
          target:
            entity_id: input_boolean.bedroom_power
switch:
  - platform: template
    switches:
      coffee_maker:
        unique_id: test_coffee_maker
        friendly_name: Coffee maker
        value_template: "{{{{ is_state('input_boolean.coffee_power', 'on') }}}}"
        turn_on:
          service: input_boolean.turn_on
          target:
            entity_id: input_boolean.coffee_power
        turn_off:
          service: input_boolean.turn_off
          target:
            entity_id: input_boolean.coffee_power
cover:
  - platform: template
    covers:
      garage_door:
        unique_id: test_garage_door
        friendly_name: Garage door
        value_template: "{{{{ is_state('input_boolean.garage_open', 'on') }}}}"
        open_cover:
          service: input_boolean.turn_on
          target:
            entity_id: input_boolean.garage_open
        close_cover:
          service: input_boolean.turn_off
          target:
            entity_id: input_boolean.garage_open
lock:
  - platform: template
    name: Front door
    unique_id: test_front_door
    value_template: "{{{{ is_state('input_boolean.front_door_locked', 'on') }}}}"
    lock:
      service: input_boolean.turn_on
      target:
        entity_id: input_boolean.front_door_locked
    unlock:
      service: input_boolean.turn_off
      target:
        entity_id: input_boolean.front_door_locked
scene:
  - name: Movie night
    entities:
      input_boolean.movie_mode: "on"
script:
  good_night:
    alias: Good night
    sequence:
      - service: input_boolean.turn_off
        target:
          entity_id: input_boolean.kitchen_power
  dangerous:
    alias: Dangerous
    sequence:
      - service: input_boolean.turn_on
        target:
          entity_id: input_boolean.bedroom_power
"""

# area -> entities put into it after start (the registry needs the websocket API).
AREAS = {"Kitchen": ("light.kitchen", "switch.coffee_maker"), "Bedroom": ("light.bedroom",)}


def ha_cache() -> Path:
    env = os.environ.get("EDGE_ASSISTANT_HA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-assistant" / "home-assistant"


def ensure_home_assistant() -> Path:
    """The venv's ``bin`` directory with ``hass`` in it, installed once per version."""
    root = ha_cache()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"venv-{HA_VERSION}"
    marker = venv / ".edge-assistant-installed"
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.is_file():
            shutil.rmtree(venv, ignore_errors=True)  # an interrupted install: start over
            try:
                _install(venv)
            except subprocess.CalledProcessError as error:
                version = "%d.%d" % sys.version_info[:2]
                raise RuntimeError(
                    f"installing homeassistant=={HA_VERSION} with Python {version} failed ({error}); "
                    "it needs PyPI, and was checked with Python 3.11"
                ) from None
            marker.write_text(HA_VERSION + "\n")
    return venv / "bin"


def _install(venv: Path) -> None:
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([*pip, "download", "--no-deps", "-d", scratch, f"homeassistant=={HA_VERSION}"], check=True)
        wheel = next(Path(scratch).glob("homeassistant-*.whl"))
        constraints = Path(scratch) / "constraints.txt"
        with zipfile.ZipFile(wheel) as archive:
            constraints.write_bytes(archive.read("homeassistant/package_constraints.txt"))
        subprocess.run([*pip, "install", "-c", str(constraints), str(wheel)], check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class HomeAssistantServer:
    """One running ``hass``: ``url``, an access ``token`` and its ``pid``."""

    bin_dir: Path
    config_dir: Path
    port: int = field(default_factory=free_port)
    token: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HomeAssistantServer:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(self.configuration())
        hass = str(self.bin_dir / "hass")
        if not (self.config_dir / ".storage" / "auth_provider.homeassistant").exists():
            subprocess.run(
                [hass, "--script", "auth", "-c", str(self.config_dir), "add", USER, PASSWORD],
                check=True, capture_output=True, timeout=120,
            )
        log = open(self.config_dir / "hass.log", "wb")
        self.process = subprocess.Popen(
            [hass, "-c", str(self.config_dir), "--skip-pip"], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_until_up()
            self.token = self._login()
            self._assign_areas()
        except BaseException:
            self.stop()
            raise
        return self

    def configuration(self) -> str:
        return CONFIGURATION.format(port=self.port)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it lingers; safe to call twice."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        path = self.config_dir / "hass.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"hass exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                urllib.request.urlopen(self.url + "/api/", timeout=2)
            except urllib.error.HTTPError as error:
                if error.code == 401:  # up: /api/ wants a token
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"hass did not answer on {self.url} within {START_TIMEOUT_S:.0f} s:\n{self.log_text()}")

    def _post(self, path: str, body: dict[str, object] | bytes, content_type: str = "application/json") -> dict:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def _login(self) -> str:
        client_id = self.url + CLIENT_ID_PATH
        flow = self._post(
            "/auth/login_flow",
            {"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id},
        )
        step = self._post(
            f"/auth/login_flow/{flow['flow_id']}", {"client_id": client_id, "username": USER, "password": PASSWORD}
        )
        if step.get("type") != "create_entry":
            raise RuntimeError(f"login flow refused the test user: {step}")
        form = urllib.parse.urlencode({"grant_type": "authorization_code", "code": step["result"], "client_id": client_id})
        tokens = self._post("/auth/token", form.encode(), "application/x-www-form-urlencoded")
        return tokens["access_token"]

    def _assign_areas(self) -> None:
        """Areas exist only in the registries, which only the websocket API edits:
        done by a short script in HA's own venv (it has aiohttp)."""
        script = textwrap.dedent(
            """
            import asyncio, json, sys
            import aiohttp

            async def main(url, token, areas):
                async with aiohttp.ClientSession() as session:
                    async with session.ws_connect(url + "/api/websocket") as ws:
                        await ws.receive_json()
                        await ws.send_json({"type": "auth", "access_token": token})
                        assert (await ws.receive_json())["type"] == "auth_ok"
                        ident = 0

                        async def call(**message):
                            nonlocal ident
                            ident += 1
                            await ws.send_json({"id": ident, **message})
                            while True:
                                reply = await ws.receive_json()
                                if reply.get("id") == ident:
                                    assert reply["success"], reply
                                    return reply["result"]

                        existing = {a["name"]: a["area_id"] for a in await call(type="config/area_registry/list")}
                        for name, entities in areas.items():
                            area_id = existing.get(name) or (await call(type="config/area_registry/create", name=name))["area_id"]
                            for entity_id in entities:
                                await call(type="config/entity_registry/update", entity_id=entity_id, area_id=area_id)

            asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
            """
        )
        done = subprocess.run(
            [str(self.bin_dir / "python"), "-c", script, self.url, self.token, json.dumps(AREAS)],
            capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"putting entities into areas failed:\n{done.stderr[-2000:]}")

    def state(self, entity_id: str) -> str:
        request = urllib.request.Request(
            f"{self.url}/api/states/{entity_id}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["state"]

    def call(self, domain: str, service: str, entity_id: str) -> None:
        """Set up a state for a test, straight through the API."""
        request = urllib.request.Request(
            f"{self.url}/api/services/{domain}/{service}", data=json.dumps({"entity_id": entity_id}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()


if __name__ == "__main__":  # manual use: install, start, print the URL and token, wait
    server = HomeAssistantServer(ensure_home_assistant(), Path(tempfile.mkdtemp(prefix="ha-"))).start()
    print(server.url, server.token, flush=True)
    try:
        server.process.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        server.stop()
