"""The OpenEnv connector against a real OpenEnv MCP environment (FastMCP in process): tool calls become
CallToolActions, results and errors come back as tool messages, the tools reach the chat template as schemas."""

from __future__ import annotations

import asyncio

from rlpipe.data.sample import Sample
from rlpipe.rollout.env import StepResult
from tests.envs.openenv_calculator import make


def call(name: str, expression: str) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {{"expression": "{expression}"}}}}</tool_call>'


def test_tool_calls_run_in_the_openenv_environment_and_errors_are_answers() -> None:
    env = make()

    async def episode() -> list[StepResult]:
        await env.reset(Sample(prompt="q"))
        return [
            await env.step(call("calculator", "12345+67890")),
            await env.step(call("calculator", "1/0") + call("nope", "1")),
            await env.step("80235"),
        ]

    ok, failed, answer = asyncio.run(episode())
    assert ok == StepResult(
        [{"role": "tool", "name": "calculator", "content": "80235"}], info={"tool_calls": 1.0, "tool_errors": 0.0}
    )
    contents = [m["content"] for m in failed.observation]
    assert "division by zero" in contents[0] and "nope" in contents[1]
    assert all(c.startswith("error: ") for c in contents) and failed.info["tool_errors"] == 2.0
    assert answer.done and answer.observation == []


def test_the_environments_tools_are_listed_as_json_schemas() -> None:
    schema = make().tools["calculator"]
    assert schema["type"] == "function" and schema["function"]["name"] == "calculator"
    assert schema["function"]["parameters"]["required"] == ["expression"]
