"""Environments of multi-turn rollouts: the protocol, and the built-in tool environment.

An environment speaks text and chat messages; the rollout owns the tokens (it appends what an environment answers
as tokens the trainer does not train on, and never re-tokenizes what the model generated). One environment object
serves one episode (one sample), so per-sample state is just its attributes:

    await env.reset(sample)          once, before the model's first turn
    await env.step(action) -> StepResult
                                     after each model turn; `action` is that turn's decoded text. The result's
                                     `observation` (chat messages, e.g. tool results) is shown to the model as the
                                     next turn's input; `done` ends the episode; `reward`, when given, is the
                                     episode's reward (else the run's reward function scores the sample)

`rollout.env` names a factory `make(cfg) -> Environment` by dotted path, called once per sample.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlpipe.data.sample import Sample
from rlpipe.rollout.tool_calls import ToolError, calculator, parse_tool_calls
from rlpipe.threads import in_daemon_thread

Message = dict[str, Any]  # a chat message: {"role": ..., "content": ..., more keys as templates read them}


@dataclass(frozen=True)
class StepResult:
    """What an environment answers to one model turn."""

    observation: list[Message] = field(default_factory=list)  # shown to the model next; empty when done
    done: bool = False
    reward: float | None = None  # the episode's reward (set with done), or None: the reward function decides
    info: dict[str, float] = field(default_factory=dict)  # counts to add up per episode (e.g. tool_calls)


class Environment(Protocol):
    async def reset(self, sample: Sample) -> None: ...

    async def step(self, action: str) -> StepResult: ...


@dataclass
class ToolEnv:
    """Runs the tool calls of each model turn (Qwen/Hermes `<tool_call>` blocks) and answers with their results,
    one `tool` message per call, in order; a turn without a call ends the episode (the model has answered).

    A tool is a function of keyword arguments returning text. An unknown tool, bad arguments, a `ToolError` or
    a call running past `timeout_s` is answered as an error message (the model may retry). Each step's `info`
    counts its `tool_calls` and `tool_errors`. `tools` are also what the chat template lists to the model (their
    type hints and Google-style docstrings become the JSON schemas, as transformers' `get_json_schema` reads them)."""

    tools: dict[str, Callable[..., str]]
    timeout_s: float = 10.0

    async def reset(self, sample: Sample) -> None:
        """Nothing to set up: the tools are stateless."""

    async def step(self, action: str) -> StepResult:
        parsed = parse_tool_calls(action)
        if not parsed:
            return StepResult(done=True)
        messages, errors = [], 0
        for call in parsed:
            result = await self._run(call.name, call.arguments) if call.error is None else f"error: {call.error}"
            errors += result.startswith("error: ")
            messages.append({"role": "tool", "name": call.name, "content": result})
        return StepResult(observation=messages, info={"tool_calls": len(parsed), "tool_errors": errors})

    async def _run(self, name: str, arguments: dict[str, Any]) -> str:
        tool = self.tools.get(name)
        if tool is None:
            return f"error: no tool named {name!r}; the tools are {sorted(self.tools)}"
        try:
            return str(await asyncio.wait_for(in_daemon_thread(functools.partial(tool, **arguments)), self.timeout_s))
        except TypeError as exc:  # the arguments do not fit the tool's signature
            return f"error: bad arguments for {name}: {exc}"
        except ToolError as exc:
            return f"error: {exc}"
        except TimeoutError:
            return f"error: {name} ran past {self.timeout_s:g} s"


def calculator_env(cfg: object = None) -> ToolEnv:
    """The built-in environment: one `calculator(expression)` tool (bounded arithmetic, no eval)."""
    return ToolEnv({"calculator": calculator})
