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
from pathlib import Path

from ...config import Config
from ...errors import UsageError
from ..core import Tool
from .connection import McpConnection, McpTokenRejected
from .listing_cache import CACHE_FILE, ListedTool, ListingCache
from .schema import SchemaRefused, convert_schema, describe
from .servers import ServerSpec, home_assistant_endpoints, parse_servers
from .tools import McpTool

log = logging.getLogger(__name__)

HOME_ASSISTANT_SERVER = "home_assistant"
HOME_ASSISTANT_DEFAULT_TOOLS = ("HassTurnOn", "HassTurnOff", "HassLightSet", "GetLiveContext")


@dataclass
class McpTools:
    """The allowlisted tools of the servers. A server that is down, or refuses
    the token, at start-up is retried in the background; its tools are declared
    from its last good listing (``cache``) meanwhile, so calls get its spoken
    failure, and :meth:`refresh` (between turns) declares what it lists once it
    is up, if that differs."""

    tools: list[Tool] = field(default_factory=list)
    connections: list[McpConnection] = field(default_factory=list)
    taken: frozenset[str] = frozenset()  # names of the other tools
    where: str = "configuration"
    cache: ListingCache | None = None
    _seen: tuple[int, ...] = ()  # each connection's count of connections when the tools were last built

    def close(self) -> None:
        for connection in self.connections:
            connection.close()

    @property
    def changed(self) -> bool:
        """A server connected (again) since the tools were built: its tools may differ."""
        return tuple(connection.connections for connection in self.connections) != self._seen

    def declared_instead(self, tools: list[Tool]) -> None:
        """What was built could not be declared: ``tools`` are what is declared,
        and every server counts as changed, so the next :meth:`refresh` builds
        and compares again."""
        self.tools, self._seen = tools, ()

    def refresh(self) -> bool:
        """Rebuild the tools from every server's listing; True if the declarations
        changed. A tool that cannot be used now is left out with a warning, not an error."""
        if not self.changed:
            return False
        before = [(tool.name, tool.description, tool.parameters) for tool in self.tools]
        self.build(strict=False)
        return [(tool.name, tool.description, tool.parameters) for tool in self.tools] != before

    def build(self, strict: bool = True) -> None:
        """The tools of every server's allowlist, from its listing: the one it
        gave this run, else the one kept from an earlier run. ``strict``
        (start-up): a tool a server lists now with a schema we cannot validate
        strictly, or whose name is taken, is a one-line :class:`UsageError`;
        else a warning. Listings that gave tools are kept for the next start."""
        self._seen = tuple(connection.connections for connection in self.connections)
        tools: list[Tool] = []
        names = set(self.taken)
        good: dict[str, list[ListedTool]] = {}
        for connection in self.connections:
            spec = connection.spec
            fresh = connection.connections > 0  # it answered this run (it may be down again)
            if fresh:
                listing: list[ListedTool] | None = [ListedTool.of(tool) for tool in connection.tools]
            else:
                listing = self.cache.tools(spec) if self.cache is not None else None
            if not fresh and strict:
                log.warning("MCP server %s (%s) is unavailable (%s): %s", spec.name, spec.where, connection.last_error,
                            f"starting without its tools {', '.join(spec.tools)}; they are declared once it answers"
                            if listing is None else f"its tools {', '.join(tool.name for tool in listing)} are "
                            "declared from its last listing, and calls to them fail until it answers")
            if listing is None:
                continue
            offered = {tool.name: tool for tool in listing}
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
                    if strict and fresh:
                        raise
                    log.warning("%s: not declared", error)
                    continue
                if converted.left_out:
                    log.info("MCP tool %s: optional arguments %s are not offered (not checkable)",
                             name, ", ".join(converted.left_out))
                names.add(name)
                tools.append(McpTool(name, describe(listed.description or listed.title or name),
                                     converted.parameters, connection, name in spec.confirm))
                if fresh:
                    good.setdefault(spec.name, []).append(listed)
        self.tools = tools
        if self.cache is not None:
            self.cache.save([connection.spec for connection in self.connections], good)

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


def mcp_tools(config: Config, taken: set[str], state_dir: Path | None = None) -> McpTools:
    """The allowlisted tools of every configured server, checked: an allowlisted
    tool with a schema we cannot validate strictly, or whose name is already a
    tool, is a one-line :class:`UsageError`; one the server does not have is a
    warning. A server that is down or refuses the token is declared from its
    last listing kept in ``state_dir``, or costs its tools until it answers
    (:meth:`McpTools.refresh`)."""
    specs = server_specs(config)
    if not specs:
        return McpTools()
    cache = ListingCache(state_dir / CACHE_FILE) if state_dir is not None else None
    result = McpTools(connections=connect_servers(specs), taken=frozenset(taken), where=config.source or "configuration",
                      cache=cache)
    try:
        result.build()
    except BaseException:
        result.close()
        raise
    return result


__all__ = ["McpTools", "McpTool", "mcp_tools", "server_specs", "connect_servers", "refuse_rejected_tokens",
           "HOME_ASSISTANT_SERVER"]
