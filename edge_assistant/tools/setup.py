"""The assistant's tools from its configuration: built-ins, Home Assistant's
exposed devices and ``[[tools.command]]``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..errors import UsageError
from .builtins import Volume, builtin_tools
from .commands import parse_commands
from .core import Toolbox
from .home_assistant import home_assistant_tools
from .mcp import McpTool, McpTools, mcp_tools
from .scheduler import Scheduler
from .state import default_state_dir


@dataclass
class ToolHooks:
    """What "stop" and "forget" do, set by whoever runs the tools (the daemon),
    and where the turn running them was heard: with rooms (README "Rooms") the
    turn runner sets ``room`` and ``area`` before each turn, "stop" and "forget"
    reach that room, and a timer rings there."""

    on_stop: Callable[[], None] = lambda: None
    on_forget: Callable[[], None] = lambda: None
    room: str = ""
    area: str = ""  # the room's Home Assistant area, "" if not configured


@dataclass
class ToolSet:
    toolbox: Toolbox
    scheduler: Scheduler
    volume: Volume
    hooks: ToolHooks
    mcp: McpTools = field(default_factory=McpTools)

    def close(self) -> None:
        """Disconnect from the MCP servers (their programs are stopped)."""
        self.mcp.close()

    @property
    def outdated(self) -> bool:
        """An MCP server connected since the tools were declared (cheap, any thread)."""
        return self.mcp.changed

    def refresh(self) -> bool:
        """Declare the tools of MCP servers that came up, or changed their tools,
        since the last look; True if the declarations changed. Only between turns,
        on the engine's thread, which then evaluates the new system prompt."""
        if not self.mcp.refresh():
            return False
        self.toolbox.tools = [*(tool for tool in self.toolbox.tools if not isinstance(tool, McpTool)), *self.mcp.tools]
        return True

    def declare_later(self, declared: list) -> None:
        """The engine could not declare what :meth:`refresh` built: back to the
        tools ``declared`` before, and the next look builds them again."""
        self.toolbox.tools = declared
        self.mcp.declared_instead([tool for tool in declared if isinstance(tool, McpTool)])

    def problems(self) -> list[str]:
        """Servers whose tools do not work now, a few words each (for STATUS=)."""
        return self.mcp.problems()


def state_dir(config: Config) -> Path:
    return Path(config.tools.state_dir).expanduser() if config.tools.state_dir else default_state_dir()


def build_tools(config: Config, clock: Callable[[], float] = time.time) -> ToolSet:
    """Everything ``[tools]`` declares, checked now: a bad command table or an
    unusable state directory is a one-line :class:`UsageError` at startup."""
    where = config.source or "configuration"
    directory = state_dir(config)
    _check_writable(directory, where)
    hooks = ToolHooks()
    try:
        scheduler = Scheduler(directory, clock, room=lambda: hooks.room)
        volume = Volume(directory, list(config.tools.mixer))
    except OSError as error:
        raise UsageError(f"{where}: tools.state_dir {directory} is not usable: {error.strerror or error}") from None
    if config.tools.mixer:
        parse_commands([{"name": "mixer", "description": "mixer", "argv": list(config.tools.mixer)}], where)
    builtins = builtin_tools(scheduler, volume, lambda: hooks.on_stop(), lambda: hooks.on_forget())
    home = home_assistant_tools(config, area=lambda: hooks.area) if config.tools.enabled else []
    commands = parse_commands(config.tools.command, where, {tool.name for tool in [*builtins, *home]})
    remote = (mcp_tools(config, {tool.name for tool in [*builtins, *home, *commands]}, directory)
              if config.tools.enabled else McpTools())
    toolbox = Toolbox([*builtins, *home, *commands, *remote.tools] if config.tools.enabled else [], config.tools.max_calls_per_turn)
    return ToolSet(toolbox, scheduler, volume, hooks, remote)


def _check_writable(directory: Path, where: str) -> None:
    """The state directory, or the nearest parent that exists, must be writable;
    it is created only when a timer or the volume is first saved."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: tools.state_dir {directory} is not writable (set tools.state_dir)")
