"""Voice commands: tools Gemma 4 may call (see README, "Voice commands").

``core`` declares and checks; the built-ins, the scheduler and the allowlisted
commands build on it. The Gemma call syntax itself is model-format code in
:mod:`edge_assistant.llm.tool_calls`.
"""

from .core import (
    MAX_RESULT_CHARS,
    PARAMETER_TYPES,
    Confirmer,
    FunctionTool,
    Parameter,
    Tool,
    ToolCallRecord,
    Toolbox,
    ToolError,
    ToolRejected,
    ToolResult,
    check_arguments,
    declaration,
)

__all__ = [
    "MAX_RESULT_CHARS", "PARAMETER_TYPES", "Confirmer", "FunctionTool", "Parameter", "Tool", "ToolCallRecord",
    "Toolbox", "ToolError", "ToolRejected", "ToolResult", "check_arguments", "declaration",
]
