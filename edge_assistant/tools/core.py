"""What a tool is, how its arguments are checked, and how a call is run.

The threat model is injection through speech: whatever someone says near the
microphone can end up as a tool call. So nothing runs unless it is declared, and
every argument is checked against its declaration (type, bounds, enum, pattern,
length) before the tool sees it. A rejected or failing call becomes an error
*result* the model can apologise with, never an exception out of the turn.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import EdgeAssistantError

log = logging.getLogger(__name__)

PARAMETER_TYPES = ("string", "integer", "number", "boolean")
DEFAULT_MAX_LENGTH = 200  # characters a string argument may have unless declared otherwise
MAX_RESULT_CHARS = 1000  # every string in a result is cut to this: results go back into the context
TOOL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ToolRejected(EdgeAssistantError):
    """A call that must not run: unknown tool, or arguments that break the declaration."""

    exit_code = 2


class ToolError(Exception):
    """Raised by a tool's ``run`` for a failure the user should hear about (the
    message goes to the model as the error result)."""


@dataclass(frozen=True)
class Parameter:
    """One declared argument. Strings are capped at ``max_length`` and may be
    limited to ``enum`` values or a ``pattern`` (matched whole); numbers may have
    ``minimum``/``maximum``; an optional parameter has a ``default``."""

    name: str
    type: str
    description: str = ""
    required: bool = True
    enum: tuple[str, ...] = ()
    pattern: str | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None

    def __post_init__(self) -> None:
        if self.type not in PARAMETER_TYPES:
            raise ValueError(f"unknown parameter type {self.type!r} (known: {', '.join(PARAMETER_TYPES)})")
        if not TOOL_NAME.fullmatch(self.name):
            raise ValueError(f"parameter name {self.name!r} must be lower-case letters, digits and _")
        if self.pattern is not None:
            re.compile(self.pattern)
        if self.max_length < 1:
            raise ValueError("max_length must be at least 1")
        if (self.enum or self.pattern) and self.type != "string":
            raise ValueError("enum and pattern apply to string parameters only")
        if (self.minimum is not None or self.maximum is not None) and self.type not in ("integer", "number"):
            raise ValueError("minimum and maximum apply to integer and number parameters only")

    def check(self, value: Any) -> Any:
        """The value if it fits the declaration, else :class:`ToolRejected`."""
        checker = getattr(self, f"_check_{self.type}")
        return checker(value)

    def _check_string(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._rejected(f"must be a string, not {_kind(value)}")
        if len(value) > self.max_length:
            raise self._rejected(f"is {len(value)} characters long, more than {self.max_length}")
        if any(ord(char) < 32 and char not in "\t" for char in value) or "\x7f" in value:
            raise self._rejected("contains control characters")
        if self.enum and value not in self.enum:
            raise self._rejected(f"must be one of {', '.join(self.enum)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise self._rejected(f"does not match {self.pattern}")
        return value

    def _check_integer(self, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._rejected(f"must be an integer, not {_kind(value)}")
        return self._in_bounds(value)

    def _check_number(self, value: Any) -> float | int:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise self._rejected(f"must be a finite number, not {_kind(value)}")
        return self._in_bounds(value)

    def _check_boolean(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self._rejected(f"must be true or false, not {_kind(value)}")
        return value

    def _in_bounds(self, value: float | int) -> float | int:
        if self.minimum is not None and value < self.minimum:
            raise self._rejected(f"must be at least {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise self._rejected(f"must be at most {self.maximum:g}")
        return value

    def _rejected(self, why: str) -> ToolRejected:
        return ToolRejected(f"argument {self.name} {why}")

    def schema(self) -> dict[str, Any]:
        """The JSON-schema property the chat template renders. Bounds and patterns
        have no place in Gemma's declaration format, so they go into the description."""
        notes = []
        if self.minimum is not None and self.maximum is not None:
            notes.append(f"from {self.minimum:g} to {self.maximum:g}")
        elif self.minimum is not None:
            notes.append(f"at least {self.minimum:g}")
        elif self.maximum is not None:
            notes.append(f"at most {self.maximum:g}")
        if self.pattern is not None:
            notes.append(f"matching {self.pattern}")
        description = self.description + (f" ({'; '.join(notes)})" if notes else "")
        prop: dict[str, Any] = {"type": self.type, "description": description.strip()}
        if self.enum:
            prop["enum"] = list(self.enum)
        return prop


@dataclass(frozen=True)
class ToolResult:
    """What a tool returns to the model. ``data`` becomes the ``response:NAME{…}``
    block; ``end_turn`` ends the turn silently after this call ("stop")."""

    data: Mapping[str, Any]
    ok: bool = True
    end_turn: bool = False

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls({"error": message}, ok=False)


@runtime_checkable
class Tool(Protocol):
    """A capability offered to the model. ``confirm``: ask the user first."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    confirm: bool

    def run(self, arguments: dict[str, Any]) -> ToolResult: ...


@dataclass(frozen=True)
class FunctionTool:
    """A :class:`Tool` whose ``run`` is a Python function of the checked arguments."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    handler: Callable[[dict[str, Any]], ToolResult]
    confirm: bool = False

    def run(self, arguments: dict[str, Any]) -> ToolResult:
        return self.handler(arguments)


def check_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """The arguments completed with defaults, or :class:`ToolRejected`: unknown
    names, missing required ones and values that break their declaration."""
    if not isinstance(arguments, Mapping):
        raise ToolRejected(f"arguments of {tool.name} must be an object, not {_kind(arguments)}")
    declared = {parameter.name: parameter for parameter in tool.parameters}
    unknown = sorted(str(name) for name in arguments if name not in declared)
    if unknown:
        raise ToolRejected(f"{tool.name} has no argument {', '.join(unknown)}")
    checked: dict[str, Any] = {}
    for parameter in tool.parameters:
        if parameter.name in arguments:
            checked[parameter.name] = parameter.check(arguments[parameter.name])
        elif parameter.required:
            raise ToolRejected(f"{tool.name} needs argument {parameter.name}")
        elif parameter.default is not None:
            checked[parameter.name] = parameter.default
    return checked


def declaration(tool: Tool) -> dict[str, Any]:
    """The tool as the chat template's ``tools=`` takes it (OpenAI's function shape)."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": {
                "type": "object",
                "properties": {parameter.name: parameter.schema() for parameter in tool.parameters},
                "required": [parameter.name for parameter in tool.parameters if parameter.required],
            },
        },
    }


@dataclass
class ToolCallRecord:
    """One call as it happened: reported by ``--json``, the ``turn`` event and the log.
    ``status``: "ok", "rejected" (did not run), "failed" (ran, went wrong), "declined"
    (the user said no) or "pending" (the user is being asked)."""

    name: str
    arguments: Any
    result: dict[str, Any]
    ms: float
    status: str
    end_turn: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "arguments": self.arguments, "result": self.result,
            "ms": round(self.ms, 1), "status": self.status,
        }


# Asked before a ``confirm`` tool runs: True runs it, False declines it, None
# means the user is being asked and the answer comes after this turn (the call
# is "pending" and the turn ends).
Confirmer = Callable[[Tool, dict[str, Any]], "bool | None"]


@dataclass
class Toolbox:
    """The declared tools. :meth:`call` is the only way anything runs: it checks,
    asks for confirmation where declared, runs, times and logs every call."""

    tools: list[Tool] = field(default_factory=list)
    max_calls_per_turn: int = 4

    def __post_init__(self) -> None:
        names = [tool.name for tool in self.tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tool declared twice: {', '.join(duplicates)}")

    def add(self, tool: Tool) -> None:
        if self.get(tool.name) is not None:
            raise ValueError(f"tool declared twice: {tool.name}")
        self.tools.append(tool)

    def get(self, name: str) -> Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    def declarations(self) -> list[dict[str, Any]]:
        return [declaration(tool) for tool in self.tools]

    def check(self, name: str, arguments: Any) -> tuple[Tool, dict[str, Any]]:
        """The tool and its completed arguments, or :class:`ToolRejected`."""
        tool = self.get(name) if isinstance(name, str) else None
        if tool is None:
            raise ToolRejected(f"no tool named {str(name)[:64]!r}")
        return tool, check_arguments(tool, arguments)

    def call(self, name: str, arguments: Any, confirm: Confirmer | None = None) -> ToolCallRecord:
        """Run one call as the model made it. Never raises for the call's sake:
        the outcome is in the record. Without a ``confirm`` function a tool that
        needs confirmation is declined."""
        started = time.perf_counter()
        try:
            tool, checked = self.check(name, arguments)
        except ToolRejected as error:
            return self._record(name, arguments, ToolResult.error(str(error)), started, "rejected")
        if tool.confirm:
            decision = confirm(tool, checked) if confirm is not None else False
            if decision is None:
                waiting = ToolResult({"status": "the user is asked to say yes or no; nothing was done yet"}, end_turn=True)
                return self._record(name, checked, waiting, started, "pending")
            if not decision:
                return self._record(name, checked, ToolResult.error("the user did not confirm; nothing was done"), started, "declined")
        try:
            result = tool.run(checked)
        except ToolRejected as error:  # a tool's own check beyond the declaration
            return self._record(name, checked, ToolResult.error(str(error)), started, "rejected")
        except ToolError as error:
            return self._record(name, checked, ToolResult.error(str(error)), started, "failed")
        except Exception as error:  # a bug in a tool must not end the turn
            log.exception("tool %s raised", name)
            return self._record(name, checked, ToolResult.error(f"internal error ({type(error).__name__})"), started, "failed")
        return self._record(name, checked, result, started, "ok" if result.ok else "failed")

    def reject(self, name: str, arguments: Any, why: str) -> ToolCallRecord:
        """The record of a call that never reached a tool (unreadable, over a limit)."""
        return self._record(name, arguments, ToolResult.error(why), time.perf_counter(), "rejected")

    def _record(self, name: Any, arguments: Any, result: ToolResult, started: float, status: str) -> ToolCallRecord:
        record = ToolCallRecord(
            name=str(name)[:64], arguments=_bounded(arguments), result=_bounded(dict(result.data)),
            ms=(time.perf_counter() - started) * 1000, status=status, end_turn=result.end_turn,
        )
        log.info("tool call %s(%s): %s %s in %.0f ms", record.name, _short(record.arguments), status, _short(record.result), record.ms)
        return record


def _bounded(value: Any) -> Any:
    """A result or argument value with every string cut to MAX_RESULT_CHARS, so
    a chatty program or a hostile argument cannot flood the context or the log."""
    if isinstance(value, str):
        return value if len(value) <= MAX_RESULT_CHARS else value[:MAX_RESULT_CHARS] + "…"
    if isinstance(value, Mapping):
        return {str(key)[:64]: _bounded(item) for key, item in list(value.items())[:32]}
    if isinstance(value, (list, tuple)):
        return [_bounded(item) for item in value[:32]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _bounded(str(value))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), "null" if value is None else type(value).__name__)
