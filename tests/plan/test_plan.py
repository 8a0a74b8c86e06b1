"""The preflight plan: parameter counts against published sizes, memory terms against hand-computed values, SGLang's
KV arithmetic, placement maps, refusal with ranked fixes and the override, and `--plan` without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import yaml

from rlpipe.config import CONF_DIR, ConfigError, load
from rlpipe.config.schema import ClusterConfig, ModelConfig
from rlpipe.plan import make_plan, plan_of
from rlpipe.plan.gpus import GPUS, gpu_by_name
from rlpipe.plan.memory import engine_memory, layer_activation_bytes, sglang_default_mem_fraction, train_memory
from rlpipe.plan.params import count_params
from rlpipe.plan.placement import placement

ROOT = Path(__file__).resolve().parents[2]
GLM4 = ["experiment=glm4-9b-dapo", "cluster.gpu=h100"]
# Qwen3-30B-A3B's config.json (Qwen/Qwen3-30B-A3B), as model fields.
QWEN3_30B_A3B = [
    "model.num_layers=48", "model.hidden_size=2048", "model.ffn_hidden_size=6144", "model.num_attention_heads=32",
    "model.num_query_groups=4", "model.kv_channels=128", "model.vocab_size=151936", "model.num_experts=128",
    "model.moe_router_topk=8", "model.moe_ffn_hidden_size=768", "model.qk_layernorm=true", "model.add_qkv_bias=false",
    "model.untie_embeddings_and_output_weights=true", "model.swiglu=true",
]  # fmt: skip


def _model(name: str) -> dict:
    return {**ModelConfig().model_dump(), **yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text())}


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("qwen2.5-0.5B", 494_032_768),  # HF's num_parameters() of each checkpoint
        ("qwen2.5-1.5B", 1_543_714_304),
        ("qwen2.5-7B", 7_615_616_512),
        ("qwen3-4B", 4_022_468_096),
        ("llama3-8B", 8_030_261_248),
        ("glm4-9B", 9_400_279_040),
    ],
)
def test_parameter_counts_are_the_published_sizes(name: str, published: int) -> None:
    assert count_params(_model(name)).total == published


def test_moe_active_parameters_are_the_published_ones() -> None:
    fields = dict(o.removeprefix("model.").split("=") for o in QWEN3_30B_A3B)
    count = count_params({**ModelConfig().model_dump(), **{k: yaml.safe_load(v) for k, v in fields.items()}})
    assert count.total == 30_532_122_624  # Qwen3-30B-A3B: 30.5 B
    assert 3.3e9 <= count.active < 3.4e9  # "A3B": 3.3 B activated


def test_train_memory_terms_hand_computed() -> None:
    """Qwen2.5-7B in bf16 with Adam on 4 GPUs: TP 2 (vocab 152064 divides 256), DP 2 with the distributed optimizer,
    4096 tokens per micro-batch, no recompute."""
    cfg = load(
        [*GLM4, "model=qwen2.5-7B", "perf.tensor_parallel=2", "perf.context_parallel=1",
         "perf.sequence_parallel=false", "perf.recompute_granularity=null", "perf.recompute_method=null",
         "perf.recompute_num_layers=null", "perf.max_tokens_per_gpu=4096"],
        check_paths=False,
    )  # fmt: skip
    (stage,) = train_memory(cfg.cfg.model_dump(), cfg.topology.model_dump(), overhead=0)
    h, f, v, layers = 3584, 18944, 152064, 28
    qkv = h * (28 * 128 + 2 * 4 * 128) + (28 * 128 + 2 * 4 * 128)
    sharded = layers * (qkv + 28 * 128 * h + 3 * h * f) // 2 + 2 * v * h // 2  # + embedding, output layer / TP
    params = sharded + layers * 2 * h + h  # two norms per layer and the final norm, whole on every rank
    assert stage.params == params
    assert (stage.weights, stage.grads) == (2 * params, 4 * params)
    assert stage.optimizer == -(-params * 12 // 2)  # fp32 master + two moments, over DP 2
    q, kv = 28 * 128, 2 * 4 * 128
    per_token = (5 * h + (3 * q + (q + kv) + kv / 2) / 2 + 5 * f / 2) * 2  # no SP: the hidden-size tensors whole
    assert stage.activations == layers * -(-4096 * per_token // 1)
    chunk = min(1 << 28, 4096 * (v // 2) * 4)  # one fp32 chunk: 256 MB at most (rlpipe.train.logprobs)
    assert stage.logits == 2 * 4096 * (v // 2) * 2 + 2 * chunk  # saved logits and their gradient, bf16


def test_lora_trains_and_holds_optimizer_state_for_the_adapters_only() -> None:
    """The same Qwen2.5-7B layout with rank-16 LoRA on every projection: the weights gain the adapters (hand-counted
    with the trainer's sharding), gradients and optimizer state are the adapters' alone (shrunk by trainable/params)."""
    base = [*GLM4, "model=qwen2.5-7B", "perf.tensor_parallel=2", "perf.context_parallel=1",
            "perf.sequence_parallel=false", "perf.max_tokens_per_gpu=4096"]  # fmt: skip
    run = load([*base, "lora.rank=16"], check_paths=False)
    (stage,) = train_memory(run.cfg.model_dump(), run.topology.model_dump(), overhead=0)
    (plain,) = train_memory(load(base, check_paths=False).cfg.model_dump(), run.topology.model_dump(), overhead=0)
    h, f, q, kv, r, tp = 3584, 18944, 28 * 128, 4 * 128, 16, 2
    column = r * (h + q // tp) + 2 * r * (h + kv // tp) + 2 * r * (h + f // tp)  # q, k, v, gate, up
    row = r * (q // tp + h) + r * (f // tp + h)  # o, down
    adapters = 28 * (column + row)
    assert stage.params == plain.params + adapters and stage.weights == 2 * stage.params
    assert stage.grads == 4 * adapters
    assert stage.optimizer == -(-adapters * 12 // 2)  # fp32 master + two moments of the adapters, over DP 2
    assert stage.optimizer / plain.optimizer == pytest.approx(adapters / plain.params, rel=1e-6)


def test_full_recompute_keeps_layer_inputs_and_one_layer() -> None:
    run = load(
        [*GLM4, "model=qwen2.5-1.5B", "perf.tensor_parallel=1", "perf.context_parallel=1",
         "perf.sequence_parallel=false", "perf.expert_tensor_parallel=null", "perf.max_tokens_per_gpu=8192"],
        check_paths=False,
    )  # fmt: skip
    cfg, topology = run.cfg.model_dump(), run.topology.model_dump()
    (stage,) = train_memory(cfg, topology)
    per_layer = layer_activation_bytes(cfg, count_params(cfg["model"]), 8192, 2)  # bf16
    assert stage.activations == 28 * 8192 * 1536 * 2  # the recipe recomputes every layer (chunks of 1)
    assert stage.recompute == per_layer and stage.transient == max(per_layer, stage.logits)


def test_sglang_default_mem_fraction_is_sglang_s_arithmetic() -> None:
    # H100 (81559 MiB, TP 1): chunked prefill 8192, CUDA graphs up to 256: 512 + 8192 x 1.5 + 256 x 2 + 128 MiB,
    # raised to the 10 GiB floor above 60 GiB
    assert sglang_default_mem_fraction(GPUS["h100"].memory, 1) == round((81559 - 13440) / 81559, 3)
    assert sglang_default_mem_fraction(GPUS["a100-40g"].memory, 1) == round(
        (40960 - (512 + 6144 + 64 + 128)) / 40960, 3
    )


def test_kv_pool_is_what_sglang_sizes() -> None:
    run = load(GLM4, check_paths=False)
    cfg = run.cfg.model_dump()
    engine = engine_memory(cfg, run.topology.model_dump(), GPUS["h100"])
    weights = 9_400_279_040 * 2 // 2  # bf16, engine TP 2
    assert engine.weights == weights
    default = round((81559 - (512 + 8192 * 1.5 + 256 * 2 + 2 / 8 * 1024)) / 81559, 3)  # SGLang's, engine TP 2
    assert cfg["sglang"]["mem_fraction_static"] is None and engine.mem_fraction_static == default
    assert engine.kv_pool == int(GPUS["h100"].memory * default) - weights - engine.context
    cell = 2 * 40 * 1 * 128 * 2  # K and V, 40 layers, 2 KV heads over TP 2, head dim 128, bf16
    assert engine.kv_tokens == engine.kv_pool // cell
    assert engine.concurrent == engine.kv_tokens // (1024 + 8192)


def test_placement_disaggregated_colocated_and_multi_node() -> None:
    run = load(GLM4, check_paths=False)
    slots = placement(run.cfg.model_dump(), run.topology.model_dump())
    assert [(s.node, s.gpu) for s in slots] == [(0, i) for i in range(8)]  # engines beside the one-node trainer
    assert slots[3].trainer == "rank 3 (tp 1, cp 1, dp 0, pp 0)" and slots[3].engine is None
    assert slots[5].engine == "engine 0, shard 2/2" and slots[5].trainer is None
    colocated = load([*GLM4, "cluster.colocate=true", "cluster.actor_num_gpus_per_node=8"], check_paths=False)
    slots = placement(colocated.cfg.model_dump(), colocated.topology.model_dump())
    assert len(slots) == 8 and slots[7].trainer == "rank 7 (tp 1, cp 1, dp 1, pp 0)"
    assert slots[7].engine == "engine 3, shard 2/2"
    nodes = load([*GLM4, "cluster.actor_num_nodes=2", "perf.pipeline_parallel=2"], check_paths=False)
    slots = placement(nodes.cfg.model_dump(), nodes.topology.model_dump())
    assert slots[4].node == 1 and slots[4].trainer == "rank 4 (tp 0, cp 0, dp 0, pp 1)"
    assert slots[8].node == 2 and slots[8].engine == "engine 0, shard 1/2"
    wide = load([*GLM4, "cluster.actor_num_gpus_per_node=8"], check_paths=False)  # 8 + 4 GPUs: not one node
    slots = placement(wide.cfg.model_dump(), wide.topology.model_dump())
    assert [(s.node, s.gpu) for s in slots[8:]] == [(1, i) for i in range(4)] and slots[8].engine is not None


def test_the_seed_glm4_recipe_fits_eight_h100s(on_the_cluster: None) -> None:
    plan = plan_of(load(GLM4))
    assert not plan.overflows() and plan.timing is not None and plan.timing.rollout_s > 0


def test_tp1_no_recompute_32k_tokens_is_refused_with_ranked_fixes(on_the_cluster: None) -> None:
    worse = [*GLM4, "perf.tensor_parallel=1", "perf.sequence_parallel=false", "perf.recompute_granularity=null",
             "perf.recompute_method=null", "perf.recompute_num_layers=null",
             "perf.max_tokens_per_gpu=32768"]  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load(worse)
    problem = next(p for p in info.value.problems if "train phase" in p.message)
    assert problem.key == "cluster.gpu" and "H100" in problem.message and "activations" in problem.message
    fixes = problem.fix.split("; ")
    assert fixes[0].startswith("perf.recompute_granularity=full")  # the biggest saving first
    savings = [float(f.split("(-")[1].split(" GiB")[0]) for f in fixes if "(-" in f]
    assert savings == sorted(savings, reverse=True) and len(savings) >= 3
    assert fixes[-1].startswith("or cluster.launch_over_plan=true")
    run = load([*worse, "cluster.launch_over_plan=true"])  # the override launches, with the warning
    assert any("train phase needs" in w for w in run.warnings)


def test_qwen3_30b_a3b_on_one_gpu_is_refused(on_the_cluster: None) -> None:
    one = [*GLM4, *QWEN3_30B_A3B, "perf.tensor_parallel=1", "perf.context_parallel=1", "perf.sequence_parallel=false",
           "cluster.actor_num_gpus_per_node=1", "cluster.rollout_num_gpus=1", "sglang.rollout_num_gpus_per_engine=1",
           "rollout.global_batch_size=128"]  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load(one)
    phases = {p.message.split(" phase")[0] for p in info.value.problems if p.key == "cluster.gpu"}
    assert "the train" in phases  # 61 GB of bf16 weights with fp32 gradients and Adam: far beyond one H100
    assert "the rollout" not in phases  # SGLang serves it, with what is left for the KV cache


def test_printing_a_plan_that_overflows_warns_instead() -> None:
    run = load([*GLM4, "perf.tensor_parallel=1", "perf.sequence_parallel=false"], check_paths=False)
    assert plan_of(run).overflows() and any("phase needs" in w for w in run.warnings)


def test_schema_gpu_names_are_the_table() -> None:
    names = get_args(ClusterConfig.model_fields["gpu"].annotation)[0]
    assert set(get_args(names)) == set(GPUS)
    assert gpu_by_name("NVIDIA H100 80GB HBM3") == "h100" and gpu_by_name("NVIDIA A100-SXM4-80GB") == "a100-80g"
    assert gpu_by_name("NVIDIA H200") == "h200" and gpu_by_name("Tesla T4") is None


def test_cpu_plan_checks_nothing_but_shows_bytes() -> None:
    plan = make_plan(*(lambda r: (r.cfg.model_dump(), r.topology.model_dump()))(load([], check_paths=False)), None)
    assert plan.gpu is None and not plan.overflows() and plan.phases[0].total > 0


def test_plan_flag_prints_markdown_and_json_without_torch(tmp_path: Path) -> None:
    heavy = ("torch", "ray", "megatron", "sglang", "transformers")
    for flag in ("--plan", "--plan=json"):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", str(ROOT / "launch.py"), *GLM4, flag],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        modules = {
            ln.rsplit("|", 1)[1].strip().split(".")[0] for ln in done.stderr.splitlines() if "import time:" in ln
        }
        assert not modules & set(heavy)
        if flag == "--plan":
            assert "## Memory per GPU" in done.stdout and "| train |" in done.stdout
        else:
            body = json.loads(done.stdout)
            assert body["fits"] is True and body["params"]["total"] == 9_400_279_040
            assert {p["name"] for p in body["phases"]} == {"rollout", "train", "weight sync"}


def test_ppo_holds_a_critic_and_the_reference_lives_on_the_host() -> None:
    grpo = load(GLM4, check_paths=False)
    ppo = load([*GLM4, "algo.advantage_estimator=ppo"], check_paths=False)
    (actor,) = train_memory(grpo.cfg.model_dump(), grpo.topology.model_dump())
    (both,) = train_memory(ppo.cfg.model_dump(), ppo.topology.model_dump())
    h, v = 4096, 151552  # GLM4-9B: the critic swaps the [V/TP, h] output layer for a [1, h] value head
    critic_params = actor.params - v * h // 2 + h
    assert both.critic == critic_params * (2 + 4) + actor.optimizer * critic_params // actor.params
    assert both.total - actor.total == both.critic
    host = plan_of(grpo).memory.host  # use_kl_loss with a ref_load: the reference's shard, and the swap's copy
    assert host == {"reference weights": actor.weights, "policy copy while swapped": actor.weights}
