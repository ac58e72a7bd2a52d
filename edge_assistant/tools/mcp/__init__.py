"""Tools from MCP servers (README, "MCP servers"): ``[[mcp.server]]`` entries and
Home Assistant's own MCP server (``home_assistant.api = "mcp"``).

Only tools a server's allowlist names are declared, and only declared tools are
ever called (the toolbox refuses any other name before a request is made). Their
JSON schemas become our typed parameters, so every argument is checked before
it leaves the assistant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ...config import Config
from ...errors import UsageError
from ..core import Tool
from .connection import McpConnection, McpTokenRejected
from .schema import SchemaRefused, convert_schema, describe
from .servers import ServerSpec, home_assistant_endpoints, parse_servers
from .tools import McpTool

log = logging.getLogger(__name__)

HOME_ASSISTANT_SERVER = "home_assistant"
HOME_ASSISTANT_DEFAULT_TOOLS = ("HassTurnOn", "HassTurnOff", "HassLightSet", "GetLiveContext")


@dataclass
class McpTools:
    """The allowlisted tools of the connected servers. A server that is down, or
    refuses the token, at start-up is retried in the background; :meth:`refresh`
    (between turns) declares its tools once it is up."""

    tools: list[Tool] = field(default_factory=list)
    connections: list[McpConnection] = field(default_factory=list)
    taken: frozenset[str] = frozenset()  # names of the other tools
    where: str = "configuration"
    _seen: tuple[int, ...] = ()  # each connection's count of connections when the tools were last built

    def close(self) -> None:
        for connection in self.connections:
            connection.close()

    @property
    def changed(self) -> bool:
        """A server connected (again) since the tools were built: its tools may differ."""
        return tuple(connection.connections for connection in self.connections) != self._seen

    def refresh(self) -> bool:
        """Rebuild the tools from every connected server; True if the list changed.
        A tool that cannot be used now is left out with a warning, not an error."""
        if not self.changed:
            return False
        before = [(tool.name, tool.description, tool.parameters) for tool in self.tools]
        self.build(strict=False)
        return [(tool.name, tool.description, tool.parameters) for tool in self.tools] != before

    def build(self, strict: bool = True) -> None:
        """The tools of every connected server's allowlist. ``strict`` (start-up): a
        tool with a schema we cannot validate strictly, or whose name is taken, is
        a one-line :class:`UsageError`; else a warning."""
        self._seen = tuple(connection.connections for connection in self.connections)
        tools: list[Tool] = []
        names = set(self.taken)
        for connection in self.connections:
            spec = connection.spec
            if not connection.connected:
                if strict:
                    log.warning("MCP server %s (%s) is unavailable (%s): starting without its tools %s; "
                                "they are declared once it answers", spec.name, spec.where,
                                connection.last_error, ", ".join(spec.tools))
                continue
            offered = {tool.name: tool for tool in connection.tools}
            for name in spec.tools:
                listed = offered.get(name)
                if listed is None:
                    log.warning("MCP server %s has no tool %s (edge-assistant mcp list shows what it has)", spec.name, name)
                    continue
                try:
                    if name in names:
                        raise UsageError(f"{self.where}: MCP tool {name} of server {spec.name} is already a tool")
                    try:
                        converted = convert_schema(listed.input_schema)
                    except SchemaRefused as error:
                        raise UsageError(f"{self.where}: MCP tool {name} of server {spec.name}: {error}; "
                                         f"take it out of the allowlist") from None
                except UsageError as error:
                    if strict:
                        raise
                    log.warning("%s: not declared", error)
                    continue
                if converted.left_out:
                    log.info("MCP tool %s: optional arguments %s are not offered (not checkable)",
                             name, ", ".join(converted.left_out))
                names.add(name)
                tools.append(McpTool(name, describe(listed.description or listed.title or name),
                                     converted.parameters, connection, name in spec.confirm))
        self.tools = tools

    def problems(self) -> list[str]:
        """What keeps a server's tools from working now, a few words each (for STATUS=)."""
        return [f"{connection.spec.label or connection.spec.name}: "
                + ("access token refused" if isinstance(connection.last_error, McpTokenRejected) else "unreachable")
                for connection in self.connections if not connection.connected]


def server_specs(config: Config) -> list[ServerSpec]:
    """Every MCP server the configuration names, Home Assistant's included."""
    specs = parse_servers(config.mcp.server, config.source or "configuration")
    ha = config.home_assistant
    if ha.url and ha.api == "mcp":
        if any(spec.name == HOME_ASSISTANT_SERVER for spec in specs):
            raise UsageError(f"{config.source or 'configuration'}: mcp.server name {HOME_ASSISTANT_SERVER!r} is taken by [home_assistant]")
        specs.append(ServerSpec(
            name=HOME_ASSISTANT_SERVER, tools=tuple(ha.tools) or HOME_ASSISTANT_DEFAULT_TOOLS,
            endpoints=home_assistant_endpoints(ha.url), token_file=ha.token_file,
            token_key="home_assistant.token_file", timeout_seconds=max(ha.timeout_seconds, 3.0), label="Home Assistant",
        ))
    return specs


def connect_servers(specs: list[ServerSpec]) -> list[McpConnection]:
    """Connections to all servers, started together and waited for (the first
    attempt of each). A token file open to others is a :class:`UsageError`; a
    server that is down or refuses the token is left retrying in the background
    (:meth:`McpConnection.connected` says which)."""
    from ..home_assistant.client import read_token

    connections = [McpConnection(spec, read_token(spec.token_file, spec.token_key) if spec.token_file else "")
                   for spec in specs]
    for connection in connections:
        connection.start(wait_seconds=0)
    for connection in connections:
        connection.wait_for_first_attempt()
    return connections


def refuse_rejected_tokens(connections: list[McpConnection]) -> None:
    """For the commands that check a configuration: a refused token is
    :class:`TokenRejected` (exit code 2), after the connections are closed."""
    from ..home_assistant.client import TokenRejected

    for connection in connections:
        if isinstance(connection.last_error, McpTokenRejected) and not connection.connected:
            for other in connections:
                other.close()
            raise TokenRejected(str(connection.last_error))


def mcp_tools(config: Config, taken: set[str]) -> McpTools:
    """The allowlisted tools of every configured server, checked: an allowlisted
    tool with a schema we cannot validate strictly, or whose name is already a
    tool, is a one-line :class:`UsageError`; one the server does not have is a
    warning. A server that is down or refuses the token costs its tools only,
    until it answers (:meth:`McpTools.refresh`)."""
    specs = server_specs(config)
    if not specs:
        return McpTools()
    result = McpTools(connections=connect_servers(specs), taken=frozenset(taken), where=config.source or "configuration")
    try:
        result.build()
    except BaseException:
        result.close()
        raise
    return result


__all__ = ["McpTools", "McpTool", "mcp_tools", "server_specs", "connect_servers", "refuse_rejected_tokens",
           "HOME_ASSISTANT_SERVER"]
