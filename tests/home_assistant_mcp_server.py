"""A real Home Assistant 2025.4.4 with its MCP server (``mcp_server``) on
127.0.0.1, for the MCP tests.

HA's MCP server needs Python 3.13; ``scripts/ha_mcp_venv.sh`` finds pyenv's
3.13.0 and installs HA into a venv cached in ``~/.cache/edge-assistant/``
(about 100 s and 830 MB once). :func:`ensure_mcp_home_assistant` returns None
and a reason when there is no Python 3.13, so the tests skip saying why.

The house is the REST tests' (tests/home_assistant_server.py), plus ``frontend``
(HA 2025 starts in recovery mode without it) and the ``mcp_server`` config
entry written into ``.storage`` before the first start (it has no YAML).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from home_assistant_server import CONFIGURATION, HomeAssistantServer

REPO = Path(__file__).resolve().parent.parent
HA_MCP_VERSION = "2025.4.4"
NO_PYTHON_313 = 3  # scripts/ha_mcp_venv.sh's exit code

MCP_CONFIG_ENTRY = {
    "entry_id": "01JR0000000000000000000MCP", "version": 1, "minor_version": 1, "domain": "mcp_server",
    "title": "Assist", "data": {"llm_hass_api": "assist"}, "options": {}, "pref_disable_new_entities": False,
    "pref_disable_polling": False, "source": "user", "unique_id": None, "disabled_by": None,
    "discovery_keys": {}, "subentries": [], "created_at": "2025-04-01T00:00:00+00:00",
    "modified_at": "2025-04-01T00:00:00+00:00",
}


def ensure_mcp_home_assistant() -> tuple[Path | None, str]:
    """(the venv's bin directory, "") or (None, why not)."""
    done = subprocess.run([str(REPO / "scripts" / "ha_mcp_venv.sh")], capture_output=True, text=True, timeout=1800)
    if done.returncode == NO_PYTHON_313:
        return None, done.stderr.strip()
    if done.returncode != 0:
        raise RuntimeError(f"scripts/ha_mcp_venv.sh failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip()).parent, ""


@dataclass
class McpHomeAssistantServer(HomeAssistantServer):
    extra_lights: int = 0  # more template lights, "Lamp 1" ... (for the start-up measurement)

    def start(self) -> McpHomeAssistantServer:
        storage = self.config_dir / ".storage"
        storage.mkdir(parents=True, exist_ok=True)
        entries = storage / "core.config_entries"
        if not entries.exists():
            entries.write_text(json.dumps({"version": 1, "minor_version": 5, "key": "core.config_entries",
                                           "data": {"entries": [MCP_CONFIG_ENTRY]}}))
        super().start()
        return self

    def configuration(self) -> str:
        text = CONFIGURATION.format(port=self.port).replace("config:\n", "config:\nfrontend:\n", 1)
        text = text.replace("input_boolean:\n", "input_boolean:\n" + "".join(
            f"  lamp_{index}_power:\n    name: Lamp {index} power\n    initial: false\n"
            for index in range(1, self.extra_lights + 1)), 1)
        lights = "".join(
            f"      lamp_{index}:\n        unique_id: test_lamp_{index}\n        friendly_name: Lamp {index}\n"
            f"        value_template: \"{{{{ is_state('input_boolean.lamp_{index}_power', 'on') }}}}\"\n"
            f"        turn_on:\n          service: input_boolean.turn_on\n"
            f"          target:\n            entity_id: input_boolean.lamp_{index}_power\n"
            f"        turn_off:\n          service: input_boolean.turn_off\n"
            f"          target:\n            entity_id: input_boolean.lamp_{index}_power\n"
            for index in range(1, self.extra_lights + 1))
        return text.replace("    lights:\n", "    lights:\n" + lights, 1)
