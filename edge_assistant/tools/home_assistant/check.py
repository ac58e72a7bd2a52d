"""``edge-assistant ha check``: is Home Assistant reachable, is the token good,
and what would the assistant be allowed to touch.

Prints the server, every exposed device with its state, and the tools the model
would get; then one ``problem`` line for each allowlist entry that finds nothing.
Exit codes: 0 all well, 2 configuration (token file, refused token, an allowlist
entry that finds nothing, nothing exposed), 6 Home Assistant unreachable or
failing (the message comes from the CLI's error handling).
"""

from __future__ import annotations

import argparse

from ...config import Config
from ...errors import UsageError
from . import connect
from .devices import ExposedDevices, discover
from .tools import home_assistant_tool_list


def add_commands(subparsers: argparse._SubParsersAction, common_parser: argparse.ArgumentParser) -> None:
    ha = subparsers.add_parser("ha", help="Home Assistant: check the connection and what is exposed")
    actions = ha.add_subparsers(dest="ha_command", metavar="ACTION", required=True, parser_class=type(ha))
    actions.add_parser(
        "check", parents=[common_parser], help="reach the server, check the token, list what is exposed",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    settings = config.home_assistant
    if not settings.url:
        raise UsageError(f"home_assistant.url is not set in {config.source or 'the configuration'}")
    if settings.api == "mcp":
        from ..mcp.check import check_over_mcp

        return check_over_mcp(config)
    client = connect(settings)
    client.api_status()
    server = client.server_config()
    print(f"ok      Home Assistant {server.get('version', '?')} ({server.get('location_name', '?')}) at {client.url}, token accepted")
    discovery = discover(client, settings)
    for entity in discovery.entities:
        print(f"exposed {entity.entity_id} ({entity.name}): {discovery.states[entity.entity_id]}")
    tools = home_assistant_tool_list(ExposedDevices(client, discovery.entities))
    print(f"tools   {', '.join(tool.name for tool in tools) or 'none'}")
    problems = list(discovery.problems)
    if not discovery.entities:
        problems.append("home_assistant: nothing is exposed: list domains, entities or areas")
    for problem in problems:
        print(f"problem {problem}")
    return 2 if problems else 0
