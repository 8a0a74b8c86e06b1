"""OpenEnv environments (`pip install 'rlpipe[envs]'`, openenv-core) as rlpipe environments.

An OpenEnv `MCPEnvironment` exposes tools through an MCP server (in process: FastMCP's in-memory transport, no
network). `OpenEnvTools` plays one episode against it: `reset` is the environment's `reset_async`, each model
turn's `<tool_call>` blocks become `CallToolAction`s, their results (or errors) come back as tool messages, and an
observation with `done` ends the episode with its `reward`. A turn without a call ends the episode (the model has
answered; the run's reward function scores it). The chat template lists the environment's tools, from its
`ListToolsAction`, as JSON schemas.

Point `rollout.env` at a factory that builds one per sample:

    def make(cfg):                        # e.g. myproject/envs.py, rollout.env=myproject.envs.make
        return OpenEnvTools(MyMCPEnvironment())

Why OpenEnv and not `verifiers`: an OpenEnv environment is a plain in-process object with reset/step, which is what
a rollout that owns the tokens needs; verifiers environments drive an OpenAI-style client themselves (the rollout
would have to pose as a chat server) and pull in hosted-sandbox clients. See docs/agentic.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from rlpipe.data.sample import Sample
from rlpipe.rollout.env import Message, StepResult
from rlpipe.rollout.tool_calls import parse_tool_calls


@dataclass
class OpenEnvTools:
    """One OpenEnv MCP environment as an rlpipe Environment (tool calls in, tool results out)."""

    env: Any  # openenv.core.env_server.mcp_environment.MCPEnvironment
    reset_kwargs_key: str = "openenv_reset"  # sample.metadata[key]: keyword arguments for the environment's reset

    def __post_init__(self) -> None:
        # A failing tool is the model's mistake, answered to it and counted (tool_errors); FastMCP would also log
        # each one with a full traceback, flooding the run's output.
        logging.getLogger("fastmcp").setLevel(logging.CRITICAL)

    @property
    def tools(self) -> dict[str, dict[str, Any]]:
        """The environment's tools as the JSON schemas chat templates take (name -> schema)."""
        from openenv.core.env_server.mcp_types import ListToolsAction

        listed = self.env.step(ListToolsAction())
        return {
            tool.name: {
                "type": "function",
                "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
            }
            for tool in listed.tools
        }

    async def reset(self, sample: Sample) -> None:
        await self.env.reset_async(**sample.metadata.get(self.reset_kwargs_key, {}))

    async def step(self, action: str) -> StepResult:
        from openenv.core.env_server.mcp_types import CallToolAction

        calls = parse_tool_calls(action)
        if not calls:
            return StepResult(done=True)
        messages: list[Message] = []
        errors, done, reward = 0, False, None
        for call in calls:
            if call.error is not None:
                content = f"error: {call.error}"
            else:
                observation = await self.env.step_async(CallToolAction(tool_name=call.name, arguments=call.arguments))
                content = _content(observation)
                done, reward = done or observation.done, observation.reward
            errors += content.startswith("error: ")
            messages.append({"role": "tool", "name": call.name, "content": content})
        info = {"tool_calls": float(len(calls)), "tool_errors": float(errors)}
        if done:
            return StepResult(done=True, reward=None if reward is None else float(reward), info=info)
        return StepResult(observation=messages, info=info)


def _content(observation: Any) -> str:
    """A CallToolObservation as the text of a tool message: the tool's text content, or its error."""
    if observation.error is not None:
        return f"error: {observation.error.message}"
    result = observation.result
    content = getattr(result, "content", None)
    if content:
        return "".join(getattr(part, "text", "") for part in content)
    data = getattr(result, "data", result)
    return data if isinstance(data, str) else json.dumps(data, default=str)
