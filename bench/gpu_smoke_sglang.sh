#!/usr/bin/env bash
# Smoke-test the real SGLang path on a GPU machine with sglang installed (not run in CI):
# one engine on a small HF model, sglang-router in front, generate through it, one weight-update round trip
# (begin -> update_weights_from_tensor -> end -> flush, then generate again and compare), release/resume memory.
#   usage: bench/gpu_smoke_sglang.sh /path/to/small-hf-model [port]   (default: a free port; the router's are too)
# Prints PASS/FAIL per step; exits non-zero if any step failed. Logs go to ${LOG_DIR:-/tmp/rlpipe_sglang_smoke}.
set -uo pipefail
MODEL=${1:?usage: $0 /path/to/small-hf-model [port]}
PORT=${2:-}
export RLPIPE_SMOKE_MODEL="$MODEL" RLPIPE_SMOKE_PORT="$PORT" RLPIPE_SMOKE_LOGS="${LOG_DIR:-/tmp/rlpipe_sglang_smoke}"
cd "$(dirname "$0")/.."
exec python - <<'PY'
import os, sys, time, traceback

import torch
from transformers import AutoModelForCausalLM

from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.sglang.client import SGLangEngine
from rlpipe.rollout.sglang.process import free_ports
from rlpipe.rollout.sglang.router import SGLangRouter
from rlpipe.rollout.sglang.server import SGLangServer

model, logs = os.environ["RLPIPE_SMOKE_MODEL"], os.environ["RLPIPE_SMOKE_LOGS"]
port = int(os.environ["RLPIPE_SMOKE_PORT"] or free_ports(1)[0])
url = f"http://127.0.0.1:{port}"
failed = []


def step(name, fn):
    t0 = time.monotonic()
    try:
        result = fn()
        print(f"PASS {name} ({time.monotonic() - t0:.1f} s)", flush=True)
        return result
    except Exception:
        failed.append(name)
        print(f"FAIL {name} ({time.monotonic() - t0:.1f} s)\n{traceback.format_exc()}", flush=True)
        return None


def _expect_refusal(engine, tensors):
    try:
        engine.update_weights_from_tensor(tensors)
    except RuntimeError:
        return
    raise AssertionError("SGLang accepted an update outside begin/end")


def _ids(engine, prompts, params):
    return [[o.output_ids for o in g] for g in engine.generate(prompts, params)]


def _differs(engine, prompts, params, before):
    assert before is None or _ids(engine, prompts, params) != [[o.output_ids for o in g] for g in before]


def _same(engine, prompts, params, before):
    assert before is None or _ids(engine, prompts, params) == [[o.output_ids for o in g] for g in before]


command = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host", "127.0.0.1",
           "--port", str(port), "--tp-size", "1", "--mem-fraction-static", "0.5", "--enable-memory-saver",
           "--log-level", "warning"]
server = SGLangServer(command, url, f"{logs}/engine.log")
router = SGLangRouter(f"{logs}/router.log")
try:
    step("engine starts and answers /health", lambda: server.start(timeout_s=600))
    step("router starts", lambda: router.start())
    step("router registers the engine", lambda: router.add_worker(url))
    engine = SGLangEngine(router.url, [url])
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0, n=2)
    prompts = [[1, 2, 3, 4], [5, 6, 7]]

    def generate():
        out = engine.generate(prompts, greedy)
        assert [len(g) for g in out] == [2, 2] and all(o.output_ids and o.output_log_probs for g in out for o in g)
        assert all(o.finish_reason in ("stop", "length") for g in out for o in g)
        return out

    before = step("generate through the router (n=2, log-probs)", generate)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    named = list(hf.state_dict().items())

    def update(tensors):
        engine.begin_weight_update()
        engine.update_weights_from_tensor(tensors)
        engine.end_weight_update()
        engine.flush_cache()

    step("update outside begin/end is refused", lambda: _expect_refusal(engine, named[:1]))
    step("weight update with zeroed weights changes outputs",
         lambda: (update([(n, torch.zeros_like(t)) for n, t in named]), _differs(engine, prompts, greedy, before)))
    step("weight update back to the checkpoint restores outputs",
         lambda: (update(named), _same(engine, prompts, greedy, before)))
    step("release memory (weights, kv_cache, cuda_graph)", engine.release_memory_occupation)
    step("resume memory", engine.resume_memory_occupation)
    step("generate after resume", generate)
finally:
    router.stop()
    server.stop()


print("ALL PASS" if not failed else f"FAILED: {failed}")
sys.exit(1 if failed else 0)
PY
