"""Gemma 4's function-calling syntax: calls the model writes, responses we write.

llama-cpp-python hands tool calls back as raw text (its issue #2227), and the
engine builds its own prompts, so this module reads and writes the format of
llama.cpp's ``models/templates/gemma4.jinja`` and ``common/parsers/gemma4.cpp``:

- a call: ``<|tool_call>call:NAME{key:VALUE,…}<tool_call|>``, possibly several;
- a value: a string between ``<|"|>`` markers, a number, ``true``/``false``,
  ``null``, a list ``[…]`` or an object ``{key:…}`` with bare or quoted keys;
- a response, in the same model turn: ``<|tool_response>response:NAME{…}<tool_response|>``.

Tool results are data: every string written into a response is defused so that
no special token (``<turn|>``, ``<eos>``, a forged ``<|"|>``) can be spelled by a
program's output or a quoted argument.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CALL_OPEN = "<|tool_call>"
CALL_CLOSE = "<tool_call|>"
RESPONSE_OPEN = "<|tool_response>"
RESPONSE_CLOSE = "<tool_response|>"
QUOTE = '<|"|>'
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Anything the tokenizer could read as a special token starts "<" then a letter,
# "|", "_" or "/": a space after the "<" keeps it plain text.
_MARKUP_START = re.compile(r"<(?=[|A-Za-z_/])")
MAX_DEPTH = 8


@dataclass(frozen=True)
class ToolCall:
    """One call the model wrote. ``error`` is set when it could not be read
    (truncated, malformed): such a call never runs."""

    name: str
    arguments: Any
    error: str = ""


class _Malformed(ValueError):
    pass


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every ``<|tool_call>`` block in ``text``, in order; a block without its
    closing marker (the reply was cut off) is a call with an ``error``."""
    calls = []
    position = 0
    while (start := text.find(CALL_OPEN, position)) >= 0:
        body_start = start + len(CALL_OPEN)
        end = text.find(CALL_CLOSE, body_start)
        body = text[body_start:] if end < 0 else text[body_start:end]
        calls.append(_parse_call(body, truncated=end < 0))
        if end < 0:
            break
        position = end + len(CALL_CLOSE)
    return calls


def _parse_call(body: str, truncated: bool) -> ToolCall:
    name_match = _NAME.match(body, len("call:")) if body.startswith("call:") else None
    name = name_match.group() if name_match else ""
    if truncated:
        return ToolCall(name, None, "the call was cut off")
    if name_match is None:
        return ToolCall(name, None, "a call must be call:NAME{…}")
    try:
        reader = _Reader(body, name_match.end())
        if reader.peek() != "{":
            raise _Malformed("expected { after the tool name")
        arguments = reader.value(0)
        reader.skip_space()
        if reader.position != len(body):
            raise _Malformed(f"unexpected text after the arguments at {reader.position}")
    except _Malformed as error:
        return ToolCall(name, None, f"malformed call: {error}")
    return ToolCall(name, arguments)


class _Reader:
    """A recursive-descent reader of one Gemma 4 value."""

    def __init__(self, text: str, position: int) -> None:
        self.text = text
        self.position = position

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.position : self.position + 1]

    def skip_space(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def expect(self, literal: str) -> None:
        self.skip_space()
        if not self.text.startswith(literal, self.position):
            raise _Malformed(f"expected {literal!r} at {self.position}")
        self.position += len(literal)

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _Malformed("nested too deeply")
        self.skip_space()
        if self.text.startswith(QUOTE, self.position):
            return self.string()
        head = self.peek()
        if head == "{":
            return self.mapping(depth)
        if head == "[":
            return self.sequence(depth)
        for literal, meaning in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(literal, self.position):
                self.position += len(literal)
                return meaning
        number = _NUMBER.match(self.text, self.position)
        if number:
            self.position = number.end()
            text = number.group()
            return int(text) if re.fullmatch(r"-?[0-9]+", text) else float(text)
        raise _Malformed(f"unexpected {self.text[self.position:self.position + 10]!r} at {self.position}")

    def string(self) -> str:
        self.position += len(QUOTE)
        end = self.text.find(QUOTE, self.position)
        if end < 0:
            raise _Malformed("unterminated string")
        content, self.position = self.text[self.position : end], end + len(QUOTE)
        return content

    def mapping(self, depth: int) -> dict[str, Any]:
        self.expect("{")
        result: dict[str, Any] = {}
        if self.peek() == "}":
            self.position += 1
            return result
        while True:
            self.skip_space()
            if self.text.startswith(QUOTE, self.position):
                key = self.string()
            else:
                match = _NAME.match(self.text, self.position)
                if not match:
                    raise _Malformed(f"expected a key at {self.position}")
                key, self.position = match.group(), match.end()
            if key in result:
                raise _Malformed(f"key {key} given twice")
            self.expect(":")
            result[key] = self.value(depth + 1)
            head = self.peek()
            self.position += 1
            if head == "}":
                return result
            if head != ",":
                raise _Malformed(f"expected , or }} at {self.position - 1}")

    def sequence(self, depth: int) -> list[Any]:
        self.expect("[")
        items: list[Any] = []
        if self.peek() == "]":
            self.position += 1
            return items
        while True:
            items.append(self.value(depth + 1))
            head = self.peek()
            self.position += 1
            if head == "]":
                return items
            if head != ",":
                raise _Malformed(f"expected , or ] at {self.position - 1}")


def format_value(value: Any) -> str:
    """A value in Gemma's notation (the template's ``format_argument`` with bare keys)."""
    if isinstance(value, str):
        return QUOTE + defuse(value) + QUOTE
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_key(key)}:{format_value(item)}" for key, item in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    return format_value(str(value))


def defuse(text: str) -> str:
    """``text`` with nothing a tokenizer that parses special tokens would read as one."""
    return _MARKUP_START.sub("< ", text)


def _key(key: Any) -> str:
    text = str(key)
    return text if _NAME.fullmatch(text) else QUOTE + defuse(text) + QUOTE


def render_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A call as the model writes it (scripted output in tests, history)."""
    return f"{CALL_OPEN}call:{name}{format_value(dict(arguments))}{CALL_CLOSE}"


def render_tool_response(name: str, result: Mapping[str, Any]) -> str:
    """The response block that goes back into the model's turn."""
    safe_name = name if _NAME.fullmatch(name or "") else "unknown"
    return f"{RESPONSE_OPEN}response:{safe_name}{format_value(dict(result))}{RESPONSE_CLOSE}"


def render_declaration(tool: Mapping[str, Any]) -> str:
    """One ``<|tool>declaration:…<tool|>`` block for a model file without a chat
    template, as Gemma 4's template writes it (types upper-case, keys sorted)."""
    function = tool["function"]
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    fields = []
    for name, prop in sorted(properties.items()):
        parts = []
        if prop.get("description"):
            parts.append(f"description:{QUOTE}{prop['description']}{QUOTE}")
        if prop.get("enum"):
            parts.append("enum:[" + ",".join(f"{QUOTE}{item}{QUOTE}" for item in prop["enum"]) + "]")
        parts.append(f"type:{QUOTE}{str(prop['type']).upper()}{QUOTE}")
        fields.append(f"{name}:{{{','.join(parts)}}}")
    body = f"description:{QUOTE}{function['description']}{QUOTE}"
    if parameters:
        declared = []
        if properties:
            declared.append("properties:{" + ",".join(fields) + "}")
        if parameters.get("required"):
            declared.append("required:[" + ",".join(f"{QUOTE}{name}{QUOTE}" for name in parameters["required"]) + "]")
        declared.append(f"type:{QUOTE}{str(parameters.get('type', 'object')).upper()}{QUOTE}")
        body += ",parameters:{" + ",".join(declared) + "}"
    return f"<|tool>declaration:{function['name']}{{{body}}}<tool|>"
