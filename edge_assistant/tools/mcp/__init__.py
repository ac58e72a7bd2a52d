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
    tools: list[Tool] = field(default_factory=list)
    connections: list[McpConnection] = field(default_factory=list)

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


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
    """Connections to all servers, started together and waited for. A token file
    open to others is a :class:`UsageError`; a refused token raises
    :class:`McpTokenRejected`; a server that is down only logs a warning (it is
    retried in the background, but its tools are declared from the next start)."""
    from ..home_assistant.client import TokenRejected, read_token

    connections = [McpConnection(spec, read_token(spec.token_file, spec.token_key) if spec.token_file else "")
                   for spec in specs]
    for connection in connections:
        connection.start(wait_seconds=0)
    for connection in connections:
        connection.wait_for_first_attempt()
    for connection in connections:
        if isinstance(connection.last_error, McpTokenRejected) and not connection.connected:
            for other in connections:
                other.close()
            raise TokenRejected(str(connection.last_error))
    return connections


def mcp_tools(config: Config, taken: set[str]) -> McpTools:
    """The allowlisted tools of every configured server, checked: an allowlisted
    tool with a schema we cannot validate strictly, or whose name is already a
    tool, is a one-line :class:`UsageError`; one the server does not have is a
    warning."""
    specs = server_specs(config)
    if not specs:
        return McpTools()
    connections = connect_servers(specs)
    result = McpTools(connections=connections)
    names = set(taken)
    where = config.source or "configuration"
    try:
        for connection in connections:
            spec = connection.spec
            if not connection.connected:
                log.warning("MCP server %s (%s) is unavailable: starting without its tools %s",
                            spec.name, spec.where, ", ".join(spec.tools))
                continue
            offered = {tool.name: tool for tool in connection.tools}
            for name in spec.tools:
                listed = offered.get(name)
                if listed is None:
                    log.warning("MCP server %s has no tool %s (edge-assistant mcp list shows what it has)", spec.name, name)
                    continue
                if name in names:
                    raise UsageError(f"{where}: MCP tool {name} of server {spec.name} is already a tool")
                try:
                    converted = convert_schema(listed.input_schema)
                except SchemaRefused as error:
                    raise UsageError(f"{where}: MCP tool {name} of server {spec.name}: {error}; "
                                     f"take it out of the allowlist") from None
                if converted.left_out:
                    log.info("MCP tool %s: optional arguments %s are not offered (not checkable)",
                             name, ", ".join(converted.left_out))
                names.add(name)
                result.tools.append(McpTool(name, describe(listed.description or listed.title or name),
                                            converted.parameters, connection, name in spec.confirm))
    except BaseException:
        result.close()
        raise
    return result


__all__ = ["McpTools", "McpTool", "mcp_tools", "server_specs", "connect_servers", "HOME_ASSISTANT_SERVER"]
