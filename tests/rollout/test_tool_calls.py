"""Tool calls parsed from model text (Qwen/Hermes format) and the calculator tool's limits."""

from __future__ import annotations

import pytest

from rlpipe.rollout.tool_calls import ToolCall, ToolError, calculator, parse_tool_calls


def test_calls_are_parsed_in_order_with_their_arguments() -> None:
    text = (
        'Let me add.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "12345+67890"}}\n</tool_call>'
        '\n<tool_call>{"name": "calculator", "arguments": {"expression": "2*3"}}</tool_call>'
    )
    assert parse_tool_calls(text) == [
        ToolCall("calculator", {"expression": "12345+67890"}),
        ToolCall("calculator", {"expression": "2*3"}),
    ]
    assert parse_tool_calls("no call here, just <tool_call> unclosed") == []


@pytest.mark.parametrize(
    ("body", "error"),
    [("{not json}", "is not JSON"), ('["calculator"]', "needs"), ('{"name": "c", "arguments": "2+2"}', "needs")],
)
def test_malformed_calls_are_reported_not_dropped(body: str, error: str) -> None:
    (call,) = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert call.error is not None and error in call.error


@pytest.mark.parametrize(
    ("expression", "value"),
    [("12345+67890", "80235"), ("(2+3)*-4", "-20"), ("7/2", "3.5"), ("8/2", "4"), ("17//5", "3"), ("17%5", "2")],
)
def test_calculator(expression: str, value: str) -> None:
    assert calculator(expression) == value


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("__import__('os').system('true')", "unsupported"),
        ("9**9**9", "unsupported"),  # no powers: no arithmetic bombs
        ("1" * 70 + "*2", "more than 64 digits"),
        ("1/0", "division by zero"),
        ("2+", "not an arithmetic expression"),
        ("'a'*3", "unsupported"),
    ],
)
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression: str, error: str) -> None:
    with pytest.raises(ToolError, match=error):
        calculator(expression)
