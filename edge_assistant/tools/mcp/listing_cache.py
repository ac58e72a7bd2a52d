"""Each MCP server's last good tool listing, kept in the state directory
(``mcp-tools.json``).

A server that is down, or refuses the token, when the assistant starts still
has its allowlisted tools declared from here: the system prompt (and so its
saved KV state) is the same on every boot, even when Home Assistant starts more
slowly than the Pi, and a call to such a tool gets the server's short spoken
failure ("Home Assistant refused my access token.") rather than "no such tool".

Only the allowlisted tools' schemas are kept, per server, under a key of what
configures the server (its program or addresses and its allowlist), so a change
there leaves the entry unused. A listing without any allowlisted tool never
replaces a good one. A file that cannot be read is ignored with a warning and
replaced at the next good listing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..state import read_json, write_json_atomic
from .servers import ServerSpec

log = logging.getLogger(__name__)

CACHE_FILE = "mcp-tools.json"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ListedTool:
    """The parts of a listed tool (``mcp.types.Tool``) that its declaration is built from."""

    name: str
    title: str | None
    description: str | None
    input_schema: dict[str, Any]

    @classmethod
    def of(cls, tool: Any) -> ListedTool:
        return cls(tool.name, tool.title, tool.description, dict(tool.input_schema))


def server_key(spec: ServerSpec) -> str:
    """What the server's declared tools depend on in the configuration."""
    what = {"name": spec.name, "argv": list(spec.argv), "tools": list(spec.tools),
            "endpoints": [[endpoint.transport, endpoint.url] for endpoint in spec.endpoints]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


class ListingCache:
    """The cache file, read once; :meth:`save` writes it only when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._servers = self._read()

    def tools(self, spec: ServerSpec) -> list[ListedTool] | None:
        """The server's allowlisted tools from its last good listing, if that
        was made with the same configuration."""
        entry = self._servers.get(spec.name)
        if entry is None:
            return None
        if entry["key"] != server_key(spec):
            log.info("%s: the listing kept for MCP server %s is from another configuration: not used", self.path, spec.name)
            return None
        return [ListedTool(**tool) for tool in entry["tools"]]

    def save(self, specs: list[ServerSpec], listings: dict[str, list[ListedTool]]) -> None:
        """Keep these servers' listings (non-empty ones) and drop servers no
        longer configured. A write that fails is a warning: the cache only
        spares a start without a server's tools."""
        names = {spec.name for spec in specs}
        servers = {name: entry for name, entry in self._servers.items() if name in names}
        for spec in specs:
            listed = listings.get(spec.name)
            if listed:
                servers[spec.name] = {"key": server_key(spec), "tools": [asdict(tool) for tool in listed]}
        if servers == self._servers:
            return
        try:
            write_json_atomic(self.path, {"format": CACHE_FORMAT, "servers": servers})
        except OSError as error:
            log.warning("cannot keep the MCP tool listings in %s: %s", self.path, error.strerror or error)
            return
        self._servers = servers

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = read_json(self.path)
        except OSError as error:
            log.warning("cannot read %s (%s): MCP servers down at start-up have no tools", self.path, error.strerror or error)
            return {}
        if data is None:
            return {}
        if not _well_formed(data):
            log.warning("%s is not a listing this version wrote: ignored (rewritten at the next listing)", self.path)
            return {}
        return data["servers"]


def _well_formed(data: Any) -> bool:
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("servers"), dict):
        return False
    for entry in data["servers"].values():
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not isinstance(entry.get("tools"), list):
            return False
        for tool in entry["tools"]:
            if (not isinstance(tool, dict) or set(tool) != {"name", "title", "description", "input_schema"}
                    or not isinstance(tool["name"], str) or not isinstance(tool["input_schema"], dict)
                    or not all(isinstance(tool[text], (str, type(None))) for text in ("title", "description"))):
                return False
    return True
