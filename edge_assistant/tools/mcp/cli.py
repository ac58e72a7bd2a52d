"""``edge-assistant mcp list``: what each configured MCP server offers, whether
the allowlist lets the model call it, and why a listed tool could not be used,
so a user can write the allowlist."""

from __future__ import annotations

import argparse

from ...config import Config
from ...errors import EdgeAssistantError
from . import connect_servers, refuse_rejected_tokens, server_specs
from .schema import SchemaRefused, convert_schema, describe


class McpServersUnavailable(EdgeAssistantError):
    exit_code = 6


def add_commands(subparsers: argparse._SubParsersAction, common_parser: argparse.ArgumentParser) -> None:
    mcp = subparsers.add_parser("mcp", help="MCP servers: what each one offers, allowlisted or not")
    actions = mcp.add_subparsers(dest="mcp_command", metavar="ACTION", required=True, parser_class=type(mcp))
    actions.add_parser("list", parents=[common_parser], help="connect to every [[mcp.server]] and list its tools")


def run(args: argparse.Namespace, config: Config) -> int:
    specs = server_specs(config)
    if not specs:
        print(f"no MCP servers in {config.source or 'the configuration'} (add [[mcp.server]] tables)")
        return 0
    connections = connect_servers(specs)
    refuse_rejected_tokens(connections)
    try:
        for connection in connections:
            print("\n".join(describe_server(connection)))
        down = [connection.spec.name for connection in connections if not connection.connected]
    finally:
        for connection in connections:
            connection.close()
    if down:
        raise McpServersUnavailable(f"MCP server {', '.join(down)} could not be reached (see the warnings above)")
    return 0


def describe_server(connection) -> list[str]:  # type: ignore[no-untyped-def]
    spec = connection.spec
    if not connection.connected:
        return [f"server  {spec.name} ({spec.where}): unavailable: {connection.last_error}"]
    lines = [f"server  {spec.name} ({connection.server_info}, {connection.transport}, {connection.where})"]
    offered = {tool.name for tool in connection.tools}
    for tool in connection.tools:
        allowed = tool.name in spec.tools
        try:
            converted = convert_schema(tool.input_schema)
            note = ", ".join(parameter.name for parameter in converted.parameters)
            if converted.left_out:
                note += f"; not offered: {', '.join(converted.left_out)}"
        except SchemaRefused as error:
            note = f"unusable: {error}"
        mark = "allowed" if allowed else "-      "
        lines.append(f"{mark} {tool.name}({note}): {describe(tool.description or '')[:100]}")
    for name in spec.tools:
        if name not in offered:
            lines.append(f"missing {name}: in the allowlist, not offered by the server")
    return lines
