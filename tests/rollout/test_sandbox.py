"""The sandboxed Python tool: results come back; an infinite loop, a memory bomb, an output flood, a fork and a
network attempt all end as tool errors, and the host sees no connection."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess

import pytest

from rlpipe.data.sample import Sample
from rlpipe.rollout.sandbox import SandboxLimits, network_namespace_prefix, python_env, run_python
from rlpipe.rollout.tool_calls import ToolError

SMALL = SandboxLimits(cpu_s=1, wall_s=30.0, memory_bytes=256 << 20, file_bytes=64 << 10)


def test_the_code_runs_and_what_it_prints_comes_back() -> None:
    assert run_python("import math\nprint(math.comb(50, 25))", SMALL) == "126410606437752\n"
    assert run_python("import os\nprint(os.listdir('.'))", SMALL) == "[]\n"  # an empty folder of its own


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("while True:\n    pass", "more than 1 s of CPU time"),
        ("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", "line 3: MemoryError"),
        ("while True:\n    print('x' * 1000)", "more than 65536 bytes of output"),
        ("import os\nos.fork()", "line 2: PermissionError: the sandbox does not allow os.fork"),
        ("import subprocess\nsubprocess.run(['ls'])", "PermissionError: the sandbox does not allow subprocess.Popen"),
        ("x = 1\nraise ValueError('no')", "line 2: ValueError: no"),
    ],
    ids=["infinite-loop", "memory-bomb", "output-flood", "fork", "subprocess", "exception"],
)
def test_every_limit_and_failure_is_a_tool_error(code: str, error: str) -> None:
    with pytest.raises(ToolError, match=error):
        run_python(code, SMALL)


def test_a_network_attempt_fails_and_nothing_reaches_the_host() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)"
        with pytest.raises(ToolError, match="the sandbox does not allow socket"):
            run_python(code, SMALL)
        with pytest.raises(BlockingIOError):  # no connection is waiting
            server.accept()


def test_the_code_has_a_network_namespace_of_its_own_where_the_host_allows_one() -> None:
    """Below the audit hook: with `unshare -rn` the code sees no interface but its own loopback."""
    prefix = network_namespace_prefix()
    allowed = subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    assert bool(prefix) == allowed
    if prefix:
        devices = run_python("print(open('/proc/self/net/dev').read())", SMALL)
        names = sorted(line.split(":")[0].strip() for line in devices.splitlines()[2:] if ":" in line)
        assert names == ["lo"]


def test_python_env_answers_a_tool_call_with_the_programs_output() -> None:
    env = python_env()
    call = {"name": "python", "arguments": {"code": "print(sum(range(101)))"}}

    async def episode():
        await env.reset(Sample(prompt="q"))
        return await env.step(f"<tool_call>\n{json.dumps(call)}\n</tool_call>")

    result = asyncio.run(episode())
    assert result.observation == [{"role": "tool", "name": "python", "content": "5050\n"}]
    assert result.info == {"tool_calls": 1, "tool_errors": 0}
