"""``edge-assistant tools list`` and ``tools call NAME --args JSON``: what the
model is offered, and one call exactly as the model would make it (validation
and confirmation included), to test a configured command without speaking."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import Config
from ..errors import UsageError
from ..languages import describe as describe_languages
from .commands import CommandTool
from .core import Parameter, Tool, ToolRejected
from .mcp import McpTool
from .setup import build_tools

EXIT_RAN, EXIT_FAILED, EXIT_REJECTED = 0, 1, 2


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    tools = commands.add_parser("tools", help="list the voice-command tools, or call one as the model would")
    actions = tools.add_subparsers(dest="tools_command", metavar="ACTION", required=True, parser_class=type(tools))
    listing = actions.add_parser("list", help="the tools the model is offered", parents=[common])
    listing.add_argument("--json", action="store_true", help="the declarations exactly as the chat template gets them")
    call = actions.add_parser("call", help="run one tool call, checked like a model's (exit 0 ran, 1 failed, 2 rejected)", parents=[common])
    call.add_argument("name", metavar="NAME")
    call.add_argument("--args", metavar="JSON", default="{}", help='the arguments as a JSON object, e.g. \'{"minutes": 5}\'')
    call.add_argument("--yes", action="store_true", help="answer yes to a tool that asks for confirmation")


def run(args: argparse.Namespace, config: Config) -> int:
    toolset = build_tools(config)
    try:
        return _run(args, config, toolset)
    finally:
        toolset.close()


def _run(args: argparse.Namespace, config: Config, toolset: Any) -> int:
    if args.tools_command == "list":
        if args.json:
            print(json.dumps(toolset.toolbox.declarations(), indent=1))
        else:
            print(describe_tools(toolset.toolbox.tools) if toolset.toolbox.tools else "no tools (tools.enabled = false)")
            print(describe_languages(config, config.models.directory))  # what the tools' phrases are spoken in
        return 0
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as error:
        raise UsageError(f"--args is not valid JSON: {error}") from None
    record = toolset.toolbox.call(args.name, arguments, confirm=_terminal_confirmer(args.yes))
    print(json.dumps(record.as_dict(), ensure_ascii=False))
    if record.status in ("rejected", "declined"):
        message = record.result.get("error", record.status)
        if record.status == "declined":
            message += " (pass --yes, or answer y)"
        raise ToolRejected(f"{args.name}: {message}")
    return EXIT_RAN if record.ok else EXIT_FAILED


def _terminal_confirmer(yes: bool):
    def confirm(tool: Tool, arguments: dict[str, Any]) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        answer = input(f"run {tool.name} with {json.dumps(arguments)}? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    return confirm


def describe_tools(tools: list[Tool]) -> str:
    lines = []
    for tool in tools:
        flags = " (asks first)" if tool.confirm else ""
        lines.append(f"{tool.name}{flags}: {tool.description}")
        if isinstance(tool, CommandTool):
            lines.append(f"    runs: {' '.join(json.dumps(part) if ' ' in part else part for part in tool.argv)}")
        if isinstance(tool, McpTool):
            lines.append(f"    from MCP server {tool.server} ({tool.connection.spec.where})")
        for parameter in tool.parameters:
            lines.append(f"    {parameter.name}: {describe_parameter(parameter)}")
    return "\n".join(lines)


def describe_parameter(parameter: Parameter) -> str:
    parts = [parameter.type + ("" if parameter.required else ", optional")]
    if parameter.enum:
        parts.append("one of " + "|".join(parameter.enum))
    if parameter.pattern:
        parts.append(f"matching {parameter.pattern}")
    if parameter.minimum is not None or parameter.maximum is not None:
        low = "" if parameter.minimum is None else f"{parameter.minimum:g}"
        high = "" if parameter.maximum is None else f"{parameter.maximum:g}"
        parts.append(f"{low}..{high}")
    if parameter.type == "string" and not parameter.enum:
        parts.append(f"at most {parameter.max_length} characters")
    text = ", ".join(parts)
    return f"{text} - {parameter.description}" if parameter.description else text
