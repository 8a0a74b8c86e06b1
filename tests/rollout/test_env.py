"""The tool environment: calls answered in order, every failure answered as an error and counted."""

from __future__ import annotations

import asyncio
import threading

from rlpipe.data.sample import Sample
from rlpipe.rollout.env import StepResult, ToolEnv, calculator_env


def run(env, *actions: str) -> list[StepResult]:
    async def episode() -> list[StepResult]:
        await env.reset(Sample(prompt="q"))
        return [await env.step(a) for a in actions]

    return asyncio.run(episode())


def call(expression: str, name: str = "calculator") -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {{"expression": "{expression}"}}}}</tool_call>'


def test_a_turn_with_calls_is_answered_and_a_turn_without_one_ends_the_episode() -> None:
    env = calculator_env()
    first, last = run(env, call("12345+67890") + "\n" + call("2*3"), "The sum is 80235.")
    assert first == StepResult(
        observation=[
            {"role": "tool", "name": "calculator", "content": "80235"},
            {"role": "tool", "name": "calculator", "content": "6"},
        ],
        info={"tool_calls": 2, "tool_errors": 0},
    )
    assert last.done and last.observation == []


def test_every_failure_is_an_answer_and_counted() -> None:
    release = threading.Event()  # the slow tool blocks until the test is done with it: no race on a clock
    env = ToolEnv({"calculator": lambda expression: str(expression), "slow": lambda: release.wait() and "late"})
    env.timeout_s = 0.05
    (result,) = run(
        env,
        call("1", name="nope")
        + '<tool_call>{"name": "calculator", "arguments": {"x": 1}}</tool_call>'
        + "<tool_call>{broken</tool_call>"
        + '<tool_call>{"name": "slow", "arguments": {}}</tool_call>',
    )
    contents = [m["content"] for m in result.observation]
    assert contents[0].startswith("error: no tool named 'nope'")
    assert contents[1].startswith("error: bad arguments for calculator")
    assert contents[2].startswith("error: the tool call is not JSON")
    assert contents[3] == "error: slow ran past 0.05 s"
    release.set()
    assert (result.info, result.done) == ({"tool_calls": 4, "tool_errors": 4}, False)
