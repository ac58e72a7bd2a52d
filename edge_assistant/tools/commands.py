"""Your own commands, allowlisted in the config as ``[[tools.command]]``.

Each one is a fixed program and argument list; the model only fills declared,
checked parameters into ``{name}`` placeholders. No shell is involved: every
argument is one argv element, so ``; rm -rf ~`` or ``$(reboot)`` reach the
program as the literal text they are. The program runs with a clean
environment, from ``/``, with no input, under a timeout (its whole process
group is killed), and its output, truncated, goes back to the model as data.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .core import MAX_RESULT_CHARS, PARAMETER_TYPES, TOOL_NAME, Parameter, ToolRejected, ToolResult

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
CLEAN_ENV = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 300.0
COMMAND_KEYS = {"name", "description", "argv", "parameters", "timeout_seconds", "confirm"}
PARAMETER_KEYS = {"type", "description", "required", "enum", "pattern", "max_length", "minimum", "maximum"}


@dataclass(frozen=True)
class CommandTool:
    """A :class:`~edge_assistant.tools.core.Tool` that runs one allowlisted program."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    argv: tuple[str, ...]
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    confirm: bool = False

    def command_line(self, arguments: dict[str, Any]) -> list[str]:
        """The argv with the checked arguments filled in; an element that names an
        optional parameter not given is left out. A string that would read as an
        option (``-rf``) is refused unless its declaration's enum or pattern allows it."""
        declared = {parameter.name: parameter for parameter in self.parameters}
        for name, value in arguments.items():
            parameter = declared[name]
            if isinstance(value, str) and value.startswith("-") and not (parameter.enum or parameter.pattern):
                raise ToolRejected(f"argument {name} must not start with '-' (it would read as an option)")
        argv = []
        for element in self.argv:
            names = PLACEHOLDER.findall(element)
            if any(name not in arguments for name in names):
                continue
            argv.append(PLACEHOLDER.sub(lambda match: _as_text(arguments[match.group(1)]), element))
        return argv

    def run(self, arguments: dict[str, Any]) -> ToolResult:
        argv = self.command_line(arguments)
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CLEAN_ENV, cwd="/",
            start_new_session=True, close_fds=True,
        )
        try:
            output, errors = process.communicate(timeout=self.timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return ToolResult.error(f"the command took longer than {self.timeout_seconds:g} s and was stopped")
        data: dict[str, Any] = {"exit_code": process.returncode, "output": _clip(output)}
        if process.returncode != 0 and errors:
            data["error_output"] = _clip(errors)
        return ToolResult(data, ok=process.returncode == 0)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _clip(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "…"


def parse_commands(entries: list[Any], where: str, taken: set[str] = frozenset()) -> list[CommandTool]:
    """The ``[[tools.command]]`` tables as tools, or a one-line :class:`UsageError`
    naming the key: an unknown parameter type, a placeholder with no parameter,
    a program that does not exist or is not executable, a name used twice."""
    tools: list[CommandTool] = []
    names = set(taken)
    for index, entry in enumerate(entries):
        key = f"tools.command[{index}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: {key} must be a table")
        tool = _parse_command(entry, f"{where}: {key}")
        if tool.name in names:
            raise UsageError(f"{where}: {key}.name = {tool.name!r} is already a tool")
        names.add(tool.name)
        tools.append(tool)
    return tools


def check_known_keys(entry: dict[str, Any], known: set[str], where: str) -> None:
    """A one-line :class:`UsageError` for the first key of ``entry`` not in ``known``."""
    unknown = sorted(set(entry) - known)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]} (known: {', '.join(sorted(known))})")


def checked_name(entry: dict[str, Any], pattern: re.Pattern[str], rule: str, where: str) -> str:
    """The entry's ``name``, or one line saying what a name may be."""
    name = entry.get("name")
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise UsageError(f"{where}.name = {name!r} is invalid: {rule}")
    return name


def _parse_command(entry: dict[str, Any], where: str) -> CommandTool:
    check_known_keys(entry, COMMAND_KEYS, where)
    name = checked_name(entry, TOOL_NAME, "lower-case letters, digits and _, starting with a letter", where)
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        raise UsageError(f"{where}.description is missing: the model needs it to know when to call {name}")
    argv = entry.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(item, str) for item in argv):
        raise UsageError(f"{where}.argv must be a non-empty list of strings")
    raw_parameters = entry.get("parameters", {})
    if not isinstance(raw_parameters, dict):
        raise UsageError(f"{where}.parameters must be a table of parameter tables")
    parameters = tuple(_parse_parameter(pname, spec, f"{where}.parameters.{pname}") for pname, spec in raw_parameters.items())
    declared = {parameter.name for parameter in parameters}
    if PLACEHOLDER.search(argv[0]):
        raise UsageError(f"{where}.argv[0] = {argv[0]!r}: the program itself cannot be a placeholder")
    for position, element in enumerate(argv):
        for placeholder in PLACEHOLDER.findall(element):
            if placeholder not in declared:
                raise UsageError(f"{where}.argv[{position}]: placeholder {{{placeholder}}} has no parameter")
    program = _resolve_program(argv[0], f"{where}.argv[0]")
    timeout = entry.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise UsageError(f"{where}.timeout_seconds = {timeout!r} is invalid: between 0 and {MAX_TIMEOUT_SECONDS:g}")
    confirm = entry.get("confirm", False)
    if not isinstance(confirm, bool):
        raise UsageError(f"{where}.confirm = {confirm!r} is invalid: true or false")
    return CommandTool(name, description.strip(), parameters, (program, *argv[1:]), float(timeout), confirm)


def _resolve_program(program: str, where: str) -> str:
    """An absolute path to an executable file; a bare name is looked up in the
    clean PATH the command will run with."""
    path = program if os.path.isabs(program) else shutil.which(program, path=CLEAN_PATH)
    if path is None or not os.path.isfile(path):
        raise UsageError(f"{where} = {program!r}: no such program")
    if not os.access(path, os.X_OK):
        raise UsageError(f"{where} = {program!r}: not executable")
    return path


def _parse_parameter(name: str, spec: Any, where: str) -> Parameter:
    if not isinstance(spec, dict):
        raise UsageError(f"{where} must be a table")
    check_known_keys(spec, PARAMETER_KEYS, where)
    kind = spec.get("type")
    if kind not in PARAMETER_TYPES:
        raise UsageError(f"{where}.type = {kind!r} is invalid: one of {', '.join(PARAMETER_TYPES)}")
    expected = {"description": str, "required": bool, "enum": list, "pattern": str, "max_length": int,
                "minimum": (int, float), "maximum": (int, float)}
    for key, types in expected.items():
        if key in spec and (not isinstance(spec[key], types) or (types is not bool and isinstance(spec[key], bool))):
            raise UsageError(f"{where}.{key} = {spec[key]!r} has the wrong type")
    if "enum" in spec and not all(isinstance(item, str) for item in spec["enum"]):
        raise UsageError(f"{where}.enum must list strings")
    try:
        return Parameter(
            name, kind, spec.get("description", ""), spec.get("required", True), tuple(spec.get("enum", ())),
            spec.get("pattern"), spec.get("max_length", 200), spec.get("minimum"), spec.get("maximum"),
        )
    except (ValueError, re.error) as error:
        raise UsageError(f"{where}: {error}") from None
