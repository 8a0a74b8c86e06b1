"""Tool calls in a model's text, and the built-in calculator tool.

Format: the Qwen/Hermes convention every Qwen2.5/Qwen3 chat template teaches, one call per block:

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "12345+67890"}}
    </tool_call>

`<tool_call>` is plain text in those vocabularies (not a special token), so calls are parsed from the decoded
response. A block whose body is not a JSON object with a string `name` and an object `arguments` is a malformed
call: it is reported back to the model as an error, like a failing tool, rather than silently ignored.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from dataclasses import dataclass
from typing import Any

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One parsed call; `error` set (and name/arguments empty) when the block was malformed."""

    name: str
    arguments: dict[str, Any]
    error: str | None = None


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every `<tool_call>` block of `text`, in order."""
    calls = []
    for body in _BLOCK.findall(text):
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            calls.append(ToolCall("", {}, f"the tool call is not JSON ({exc.msg} at column {exc.colno})"))
            continue
        name, arguments = (data.get("name"), data.get("arguments", {})) if isinstance(data, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(arguments, dict):
            calls.append(ToolCall("", {}, 'a tool call needs {"name": "...", "arguments": {...}}'))
            continue
        calls.append(ToolCall(name, arguments))
    return calls


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """One call in the format `parse_tool_calls` reads (on one line: the tiny demo vocabulary has no newline)."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


class ToolError(Exception):
    """A tool refused its arguments; the message goes back to the model."""


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Div: operator.truediv,
}
_MAX_DIGITS = 64  # operands and results beyond this are refused: no arithmetic bombs (9**9**9)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / // %, parentheses and unary minus.

    Parsed and computed node by node, never `eval`ed; powers are not offered and numbers beyond 64 digits are
    refused, so no input can make it run long.

    Args:
        expression: The arithmetic expression to evaluate, e.g. "12345+67890".
    """
    try:
        tree = ast.parse(str(expression), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from None
    return _format(_evaluate(tree.body))


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        try:
            return _bounded(_OPERATORS[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
    raise ToolError(f"unsupported in an expression: {type(node).__name__}")


def _bounded(value: int | float) -> int | float:
    if len(str(abs(int(value)))) > _MAX_DIGITS:
        raise ToolError(f"a number has more than {_MAX_DIGITS} digits")
    return value


def _format(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
