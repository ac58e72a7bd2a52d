"""Home Assistant devices by voice through its REST API (README, "Home Assistant").

:func:`home_assistant_tools` is the entry point the toolbox uses at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...config import Config, HomeAssistantConfig
from ..core import Tool
from .client import HomeAssistantClient, HomeAssistantError, TokenRejected, read_token
from .devices import ExposedDevices, discover, room_areas
from .tools import home_assistant_tool_list

log = logging.getLogger(__name__)


def connect(config: HomeAssistantConfig) -> HomeAssistantClient:
    """A client for the configured server (token file problems: UsageError)."""
    return HomeAssistantClient(config.url, read_token(config.token_file), config.timeout_seconds)


def home_assistant_tools(config: Config, area: Callable[[], str] = lambda: "") -> list[Tool]:
    """The tools for the exposed devices, from one ``GET /api/states``; [] when
    ``[home_assistant]`` has no url. ``area``: the Home Assistant area of the
    room the running turn was heard in (its ``[[satellite]]``'s), which decides
    between devices of the same name.

    A bad token file or a token the server refuses raises (exit code 2: a restart
    cannot fix configuration). A server that is down or failing only logs a
    warning and returns []: the assistant starts without the devices (Home
    Assistant may simply boot slower than the Pi), and calling this again, or the
    next start, brings them back.
    """
    settings = config.home_assistant
    if not settings.url or settings.api != "rest":  # "mcp": HA's own tools, from tools.mcp
        return []
    client = connect(settings)
    try:
        client.api_status()
        discovery = discover(client, settings)
    except TokenRejected:
        raise
    except HomeAssistantError as error:
        log.warning("%s: starting without Home Assistant's devices", error)
        return []
    for problem in discovery.problems:
        log.warning("%s", problem)
    if not discovery.entities:
        log.warning("Home Assistant at %s: nothing is exposed (home_assistant.domains, entities, areas)", settings.url)
    areas = room_areas(client, [satellite.area for satellite in config.satellite if satellite.area])
    tools: list[Tool] = list(home_assistant_tool_list(ExposedDevices(client, discovery.entities, areas, area)))
    log.info("Home Assistant at %s: %d devices exposed, tools %s", settings.url, len(discovery.entities),
             ", ".join(tool.name for tool in tools))
    return tools


__all__ = ["connect", "home_assistant_tools"]
