"""An allowlisted MCP tool as one of the assistant's tools."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..core import MAX_RESULT_CHARS, Parameter, ToolError, ToolResult
from .connection import McpCallFailed, McpConnection, McpTokenRejected, McpUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class McpTool:
    """A :class:`~edge_assistant.tools.core.Tool` that calls one tool of one MCP
    server. Its arguments were checked against ``parameters`` (from the server's
    schema) by the toolbox before :meth:`run` is reached."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    connection: McpConnection
    confirm: bool = False

    @property
    def server(self) -> str:
        return self.connection.spec.name

    def run(self, arguments: dict[str, Any]) -> ToolResult:
        connection = self.connection
        if not connection.connected and isinstance(connection.last_error, McpTokenRejected):
            log.warning("%s", connection.last_error)
            raise ToolError(connection.last_error.spoken)
        try:
            result = connection.call(self.name, arguments)
        except McpUnavailable as error:
            log.warning("tool %s: %s", self.name, error)
            raise ToolError(error.spoken) from None
        except McpCallFailed as error:
            log.warning("tool %s: %s", self.name, error)
            raise ToolError(f"{connection.spec.spoken_name} could not do that") from None
        text = result_text(result)
        if getattr(result, "is_error", False):
            return ToolResult.error(text or f"{connection.spec.spoken_name} could not do that")
        return ToolResult({"result": text})


def result_text(result: Any) -> str:
    """The text of a ``CallToolResult``, cut to what the context can take.
    (Special tokens are defused where the response is written into the turn.)"""
    parts: list[str] = []
    size = 0
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", "?")
        piece = getattr(item, "text", None) if kind == "text" else f"[{kind}]"
        if piece is None:
            continue
        parts.append(piece[: MAX_RESULT_CHARS + 1])
        size += len(parts[-1])
        if size > MAX_RESULT_CHARS:
            break
    text = "\n".join(parts).strip()
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "…"
