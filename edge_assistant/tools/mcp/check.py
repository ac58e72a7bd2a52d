"""``edge-assistant ha check`` with ``home_assistant.api = "mcp"``: reach HA's
MCP server with the token, list the tools it offers (and which the allowlist
lets through), and the devices its live context reports (what HA's Expose
screen exposes to Assist)."""

from __future__ import annotations

import json

from ...config import Config
from ..home_assistant.client import HomeAssistantUnreachable
from . import HOME_ASSISTANT_SERVER, connect_servers, refuse_rejected_tokens, server_specs
from .cli import describe_server

LIVE_CONTEXT = "GetLiveContext"


def check_over_mcp(config: Config) -> int:
    (spec,) = [spec for spec in server_specs(config) if spec.name == HOME_ASSISTANT_SERVER]
    (connection,) = connect_servers([spec])
    refuse_rejected_tokens([connection])
    try:
        if not connection.connected:
            raise HomeAssistantUnreachable(
                f"cannot reach Home Assistant's MCP server at {config.home_assistant.url} "
                f"(/api/mcp or /mcp_server/sse): {connection.last_error}"
            )
        print(f"ok      Home Assistant MCP server ({connection.server_info}, {connection.transport}) "
              f"at {config.home_assistant.url}, token accepted")
        print("\n".join(describe_server(connection)[1:]))
        problems = [f"home_assistant.tools: {name} is not offered by Home Assistant"
                    for name in spec.tools if name not in {tool.name for tool in connection.tools}]
        if LIVE_CONTEXT in {tool.name for tool in connection.tools}:
            result = connection.call(LIVE_CONTEXT, {})
            for line in live_context_devices(result):
                print(f"exposed {line}")
        if not connection.tools:
            problems.append("Home Assistant offers no tools: expose devices to Assist (Settings, Voice assistants, Expose)")
    finally:
        connection.close()
    for problem in problems:
        print(f"problem {problem}")
    return 2 if problems else 0


def live_context_devices(result: object) -> list[str]:
    """One line per device in GetLiveContext's answer (its ``result`` is YAML
    text inside a JSON object in HA 2025.x): the names, the domain and the state."""
    full = "\n".join(getattr(item, "text", "") for item in getattr(result, "content", None) or [])
    try:
        text = json.loads(full).get("result", full)
    except (ValueError, AttributeError):
        text = full
    devices: list[dict[str, str]] = []
    for line in str(text).splitlines():
        stripped = line.strip()
        if stripped.startswith("- names:"):
            devices.append({"names": stripped[len("- names:"):].strip()})
        elif devices and ":" in stripped and line.startswith("  "):
            key, _, value = stripped.partition(":")
            devices[-1].setdefault(key.strip(), value.strip().strip("'\""))
    return [f"{device['names']} ({device.get('domain', '?')}): {device.get('state', '?')}"
            + (f", area {device['areas']}" if device.get("areas") else "") for device in devices]
