"""``[[mcp.server]]`` tables as server specifications, checked at start-up.

A server is either a program (``argv``: run without a shell, with a clean
environment, from ``/``, like ``[[tools.command]]``) or an address (``url``:
Streamable HTTP, falling back to SSE), never both. ``tools`` is the allowlist:
the only tools of that server the model is told about or may call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ...errors import UsageError
from ..commands import CLEAN_ENV, _resolve_program, check_known_keys, checked_name

SERVER_KEYS = {"name", "argv", "url", "token_file", "tools", "confirm", "timeout_seconds"}
SERVER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MCP_TOOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Endpoint:
    transport: str  # "http" (Streamable HTTP) or "sse"
    url: str


@dataclass(frozen=True)
class ServerSpec:
    """One MCP server. ``label`` is how the spoken failures name it."""

    name: str
    tools: tuple[str, ...]
    argv: tuple[str, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    token_file: str = ""
    token_key: str = ""  # the setting the token comes from, for messages
    confirm: frozenset[str] = frozenset()
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    label: str = ""
    env: dict[str, str] = field(default_factory=lambda: dict(CLEAN_ENV))

    @property
    def spoken_name(self) -> str:
        return self.label or f"the {self.name} service"

    @property
    def where(self) -> str:
        return " ".join(self.argv) if self.argv else self.endpoints[0].url


def http_endpoints(url: str) -> tuple[Endpoint, ...]:
    """What a ``url`` entry tries, in order: Streamable HTTP, then SSE; a URL
    ending in /sse is an SSE server only."""
    if urlsplit(url).path.rstrip("/").endswith("/sse"):
        return (Endpoint("sse", url),)
    return (Endpoint("http", url), Endpoint("sse", url))


def home_assistant_endpoints(base_url: str) -> tuple[Endpoint, ...]:
    """Home Assistant's MCP server: Streamable HTTP at /api/mcp (newer HA), SSE
    at /mcp_server/sse (HA 2025.2 to 2025.x)."""
    base = base_url.rstrip("/")
    return (Endpoint("http", base + "/api/mcp"), Endpoint("sse", base + "/mcp_server/sse"))


def parse_servers(entries: list[Any], where: str) -> list[ServerSpec]:
    """The ``[[mcp.server]]`` tables, or a one-line :class:`UsageError` naming the key."""
    specs: list[ServerSpec] = []
    for index, entry in enumerate(entries):
        key = f"{where}: mcp.server[{index}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{key} must be a table")
        spec = _parse_server(entry, key)
        if any(other.name == spec.name for other in specs):
            raise UsageError(f"{key}.name = {spec.name!r} is used twice")
        specs.append(spec)
    return specs


def _parse_server(entry: dict[str, Any], where: str) -> ServerSpec:
    check_known_keys(entry, SERVER_KEYS, where)
    name = checked_name(entry, SERVER_NAME, "lower-case letters, digits, - and _, starting with a letter", where)
    tools = entry.get("tools")
    if not isinstance(tools, list) or not all(isinstance(tool, str) and MCP_TOOL_NAME.fullmatch(tool) for tool in tools):
        raise UsageError(
            f"{where}.tools must list the tool names the model may call (an empty list offers none; "
            f"edge-assistant mcp list shows what the server has)"
        )
    confirm = entry.get("confirm", [])
    if not isinstance(confirm, list) or not all(isinstance(tool, str) and tool in tools for tool in confirm):
        raise UsageError(f"{where}.confirm must list tools from {where}.tools")
    timeout = entry.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise UsageError(f"{where}.timeout_seconds = {timeout!r} is invalid: between 0 and {MAX_TIMEOUT_SECONDS:g}")
    argv, url, token_file = entry.get("argv"), entry.get("url"), entry.get("token_file", "")
    if (argv is None) == (url is None):
        raise UsageError(f"{where}: give either argv (a local program) or url (an HTTP server)")
    common = dict(name=name, tools=tuple(dict.fromkeys(tools)), confirm=frozenset(confirm), timeout_seconds=float(timeout))
    if argv is not None:
        if not isinstance(argv, list) or not argv or not all(isinstance(item, str) for item in argv):
            raise UsageError(f"{where}.argv must be a non-empty list of strings")
        if token_file:
            raise UsageError(f"{where}.token_file applies to url servers only")
        program = _resolve_program(argv[0], f"{where}.argv[0]")
        return ServerSpec(argv=(program, *argv[1:]), **common)
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{where}.url = {url!r} is invalid: an http:// or https:// address")
    if not isinstance(token_file, str):
        raise UsageError(f"{where}.token_file must be a path")
    return ServerSpec(endpoints=http_endpoints(url), token_file=token_file, token_key=f"mcp.server[{name}].token_file", **common)
