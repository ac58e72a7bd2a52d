"""An MCP tool's JSON schema as our typed parameters.

Only what :class:`~edge_assistant.tools.core.Parameter` can check strictly is
accepted: an object of string, integer, number and boolean properties, with
``enum`` (strings), ``pattern``, ``maxLength``, ``minimum``/``maximum`` and
``default`` (left to the server to apply). A required property of any other shape makes the whole tool
unusable (:class:`SchemaRefused`, one line at start-up). An *optional* property
we cannot check (an array, a nested object, ``anyOf``) is left out of the
declaration: the model never learns of it and a call that names it is refused,
so nothing unchecked ever reaches the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...llm.tool_calls import defuse
from ..core import DEFAULT_MAX_LENGTH, PARAMETER_TYPES, TOOL_NAME, Parameter

MAX_DESCRIPTION_CHARS = 400  # every declared character is evaluated at each start
# Keywords that only annotate: they change nothing a value must satisfy.
_ANNOTATIONS = {"description", "title", "default", "examples", "$schema", "$comment", "format"}
_CHECKED = {"type", "enum", "pattern", "maxLength", "minimum", "maximum"}


class SchemaRefused(ValueError):
    """A schema we cannot validate strictly; the message says which part."""


@dataclass(frozen=True)
class ConvertedSchema:
    parameters: tuple[Parameter, ...]
    left_out: tuple[str, ...]  # optional properties not declared (not checkable)


def convert_schema(schema: Any) -> ConvertedSchema:
    """The parameters for an MCP ``inputSchema``, or :class:`SchemaRefused`."""
    if not isinstance(schema, dict):
        raise SchemaRefused("the input schema is not an object")
    if schema.get("type", "object") != "object":
        raise SchemaRefused(f"the input schema has type {schema.get('type')!r}, not object")
    for combinator in ("anyOf", "oneOf", "allOf", "not", "$ref", "if", "patternProperties"):
        if combinator in schema:
            raise SchemaRefused(f"the input schema uses {combinator}")
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    if not isinstance(properties, dict) or not isinstance(required, list):
        raise SchemaRefused("properties must be an object and required a list")
    missing = [name for name in required if name not in properties]
    if missing:
        raise SchemaRefused(f"required property {missing[0]!r} is not described")
    parameters, left_out = [], []
    for name, spec in properties.items():
        try:
            parameters.append(_parameter(str(name), spec, name in required))
        except SchemaRefused as error:
            if name in required:
                raise SchemaRefused(f"required property {name!r}: {error}") from None
            left_out.append(str(name))
    return ConvertedSchema(tuple(parameters), tuple(left_out))


def _parameter(name: str, spec: Any, required: bool) -> Parameter:
    if not TOOL_NAME.fullmatch(name):
        raise SchemaRefused(f"name {name[:40]!r} is not lower-case letters, digits and _")
    if not isinstance(spec, dict):
        raise SchemaRefused("not a schema object")
    unknown = sorted(set(spec) - _ANNOTATIONS - _CHECKED)
    if unknown:
        raise SchemaRefused(f"uses {unknown[0]}, which is not checked here")
    kind = spec.get("type")
    if "enum" in spec and kind is None:
        kind = "string"
    if kind not in PARAMETER_TYPES:
        raise SchemaRefused(f"has type {kind!r} (accepted: {', '.join(PARAMETER_TYPES)})")
    enum = spec.get("enum", [])
    if not isinstance(enum, list) or (enum and (kind != "string" or not all(isinstance(item, str) for item in enum))):
        raise SchemaRefused("has an enum that is not a list of strings")
    if any(defuse(item) != item or len(item) > DEFAULT_MAX_LENGTH for item in enum):
        raise SchemaRefused("has an enum value with markup or over 200 characters")
    pattern = spec.get("pattern")
    if pattern is not None:
        if kind != "string" or not isinstance(pattern, str):
            raise SchemaRefused("has a pattern on a non-string")
        # JSON schema's pattern matches anywhere; ours matches whole.
        pattern = pattern if pattern.startswith("^") and pattern.endswith("$") else f".*(?:{pattern}).*"
        try:
            re.compile(pattern)
        except re.error:
            raise SchemaRefused("has a pattern Python cannot read") from None
    max_length = spec.get("maxLength", DEFAULT_MAX_LENGTH)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise SchemaRefused("has an invalid maxLength")
    bounds = [spec.get("minimum"), spec.get("maximum")]
    if any(bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))) for bound in bounds):
        raise SchemaRefused("has a bound that is not a number")
    description = describe(spec.get("description") or spec.get("title") or "")
    try:
        return Parameter(
            name, kind, description, required, tuple(enum), pattern, min(max_length, DEFAULT_MAX_LENGTH * 5),
            bounds[0] if kind != "string" else None, bounds[1] if kind != "string" else None,
        )
    except ValueError as error:
        raise SchemaRefused(str(error)) from None


def describe(text: Any) -> str:
    """A server's description as it may enter the system prompt: one line, cut,
    with nothing the tokenizer would read as a special token."""
    return defuse(" ".join(str(text).split())[:MAX_DESCRIPTION_CHARS])
