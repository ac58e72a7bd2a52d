"""The tools the model gets for the exposed devices, one per kind of action.

A tool is offered only when some exposed device fits it, and its ``device``
description lists the names it accepts, so the model picks from the home's own
words. Every outcome is a short result for the model: the device's name and
state, or ``error`` with a sentence it can say ("I can't reach Home Assistant.").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import FunctionTool, Parameter, ToolResult
from .client import HomeAssistantError
from .devices import Entity, ExposedDevices

POWER_DOMAINS = ("light", "switch", "fan", "input_boolean")
POWER_SERVICES = {"on": "turn_on", "off": "turn_off", "toggle": "toggle"}
COVER_SERVICES = {"open": "open_cover", "close": "close_cover", "stop": "stop_cover"}
MEDIA_SERVICES = {"play": "media_play", "pause": "media_pause", "stop": "media_stop", "volume": "volume_set"}
READABLE_DOMAINS = POWER_DOMAINS + ("cover", "climate", "media_player", "lock", "binary_sensor", "sensor")
RUNNABLE_DOMAINS = ("scene", "script")
MAX_LISTED_NAMES = 40  # beyond this the prompt grows faster than it helps; names still resolve


@dataclass(frozen=True)
class _Action:
    """What one call asks for: a service and its data, or a reason to refuse."""

    service: str
    data: dict[str, Any]
    refusal: str = ""


def home_assistant_tool_list(devices: ExposedDevices) -> list[FunctionTool]:
    """The tools for what is exposed, in a fixed order (a stable prompt prefix)."""
    kinds = [
        ("home_power", POWER_DOMAINS, "Turn a light, switch or fan on or off, or toggle it.", (
            Parameter("action", "string", "what to do", enum=tuple(POWER_SERVICES)),
            Parameter("brightness", "integer", "lights only: brightness in percent", required=False, minimum=1, maximum=100),
        ), _power),
        ("home_cover", ("cover",), "Open, close or stop a cover: a blind, shutter, garage door or gate.", (
            Parameter("action", "string", "what to do", enum=tuple(COVER_SERVICES)),
        ), lambda entity, arguments: _Action(COVER_SERVICES[arguments["action"]], {})),
        ("home_temperature", ("climate",), "Set the target temperature of a thermostat or heater.", (
            Parameter("temperature", "number", "the target, in the home's unit", minimum=0, maximum=100),
        ), _temperature_within_range(devices)),
        ("home_media", ("media_player",), "Play, pause or stop a media player, or set its volume.", (
            Parameter("action", "string", "what to do", enum=tuple(MEDIA_SERVICES)),
            Parameter("volume", "integer", "with action volume: the volume in percent", required=False, minimum=0, maximum=100),
        ), _media),
        ("home_run", RUNNABLE_DOMAINS, "Activate a scene or run a script of the home.", (),
         lambda entity, arguments: _Action("turn_on", {})),
    ]
    tools = [
        _acting_tool(devices, name, domains, description, parameters, action)
        for name, domains, description, parameters, action in kinds if devices.of(domains)
    ]
    if devices.of(READABLE_DOMAINS):
        tools.append(_state_tool(devices))
    return tools


def _device_parameter(devices: ExposedDevices, domains: tuple[str, ...]) -> Parameter:
    names = [entity.name for entity in devices.of(domains)]
    listed = ", ".join(names[:MAX_LISTED_NAMES]) + (", …" if len(names) > MAX_LISTED_NAMES else "")
    return Parameter("device", "string", f"its name, one of: {listed}", max_length=100)


def _acting_tool(
    devices: ExposedDevices, name: str, domains: tuple[str, ...], description: str,
    parameters: tuple[Parameter, ...], action: Callable[[Entity, dict[str, Any]], _Action],
) -> FunctionTool:
    def run(arguments: dict[str, Any]) -> ToolResult:
        def act() -> ToolResult:
            entity = devices.find(arguments["device"], domains)
            wanted = action(entity, arguments)
            if wanted.refusal:
                return ToolResult.error(wanted.refusal)
            return ToolResult(describe(entity, devices.call(entity, wanted.service, wanted.data)))

        return _answering_errors(act)

    return FunctionTool(name, description, (_device_parameter(devices, domains), *parameters), run)


def _state_tool(devices: ExposedDevices) -> FunctionTool:
    def run(arguments: dict[str, Any]) -> ToolResult:
        def read() -> ToolResult:
            entity = devices.find(arguments["device"], READABLE_DOMAINS)
            return ToolResult(describe(entity, devices.state(entity)))

        return _answering_errors(read)

    return FunctionTool(
        "home_state", "Tell the current state of a device of the home, e.g. whether a door is locked or a light on.",
        (_device_parameter(devices, READABLE_DOMAINS),), run,
    )


def _answering_errors(work: Callable[[], ToolResult]) -> ToolResult:
    try:
        return work()
    except HomeAssistantError as error:
        return ToolResult.error(error.spoken)


def _power(entity: Entity, arguments: dict[str, Any]) -> _Action:
    brightness = arguments.get("brightness")
    if brightness is None:
        return _Action(POWER_SERVICES[arguments["action"]], {})
    if entity.domain != "light" or arguments["action"] != "on":
        return _Action("", {}, f"Only a light being turned on takes a brightness, and {entity.name} is a {entity.domain}.")
    return _Action("turn_on", {"brightness_pct": brightness})


def _temperature_within_range(devices: ExposedDevices) -> Callable[[Entity, dict[str, Any]], _Action]:
    """The thermostat's own min_temp/max_temp bound the target: HA 2024.1 passes
    any number on to the device."""

    def action(entity: Entity, arguments: dict[str, Any]) -> _Action:
        attributes = devices.state(entity).get("attributes", {})
        low, high, wanted = attributes.get("min_temp"), attributes.get("max_temp"), arguments["temperature"]
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and not low <= wanted <= high:
            return _Action("", {}, f"{entity.name} can be set from {low:g} to {high:g} degrees.")
        return _Action("set_temperature", {"temperature": wanted})

    return action


def _media(entity: Entity, arguments: dict[str, Any]) -> _Action:
    volume = arguments.get("volume")
    if arguments["action"] != "volume":
        return _Action(MEDIA_SERVICES[arguments["action"]], {})
    if volume is None:
        return _Action("", {}, "Which volume, in percent?")
    return _Action("volume_set", {"volume_level": round(volume / 100, 2)})


def describe(entity: Entity, state: dict[str, Any]) -> dict[str, Any]:
    """A short answer for the model: the name, the state and what matters for its kind."""
    attributes = state.get("attributes", {})
    result: dict[str, Any] = {"entity": entity.name, "state": state.get("state", "unknown")}
    if entity.domain in RUNNABLE_DOMAINS:
        result["state"] = "done"
    elif entity.domain == "light" and isinstance(attributes.get("brightness"), (int, float)):
        result["brightness"] = round(attributes["brightness"] / 255 * 100)
    elif entity.domain == "climate":
        result.update({key: attributes[key] for key in ("current_temperature", "temperature") if key in attributes})
    elif entity.domain == "media_player" and isinstance(attributes.get("volume_level"), (int, float)):
        result["volume"] = round(attributes["volume_level"] * 100)
    elif entity.domain == "sensor" and attributes.get("unit_of_measurement"):
        result["unit"] = attributes["unit_of_measurement"]
    return result
