"""A real OpenEnv MCP environment for the connector tests: one `calculator(expression)` tool served by FastMCP in
process (the tool demo's tool, so the demo runs against it unchanged), and an episode counter."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP
from openenv.core.env_server.mcp_environment import MCPEnvironment
from openenv.core.env_server.types import Observation, State

from rlpipe.rollout.openenv import OpenEnvTools
from rlpipe.rollout.tool_calls import calculator as evaluate


class CalculatorEnvironment(MCPEnvironment):
    def __init__(self) -> None:
        mcp = FastMCP("calculator")

        @mcp.tool
        def calculator(expression: str) -> str:
            """Evaluate an arithmetic expression.

            Args:
                expression: The arithmetic expression to evaluate, e.g. "12345+67890".
            """
            return evaluate(expression)

        super().__init__(mcp)
        self._state = State(episode_id=None, step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> Observation:
        self._state = State(episode_id=episode_id, step_count=0)
        return Observation(done=False, reward=None)

    def _step_impl(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        raise ValueError(f"only tool calls are understood here, not {type(action).__name__}")

    @property
    def state(self) -> State:
        return self._state


def make(cfg: object = None) -> OpenEnvTools:
    return OpenEnvTools(CalculatorEnvironment())
