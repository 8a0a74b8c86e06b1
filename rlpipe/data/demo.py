"""The offline demo's assets: the tiny checkpoint (architecture from the model group) and the task data,
built on first run at the paths the resolver derived, cached afterwards."""

from __future__ import annotations

from pathlib import Path

from rlpipe.config.resolve import DEMO_CHECKPOINT_PREFIX
from rlpipe.config.schema import RunConfig
from rlpipe.data.tasks import write_task_dataset
from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint


def tiny_spec(cfg: RunConfig) -> TinyModelSpec:
    m, demo = cfg.model, cfg.demo
    assert demo is not None and m.num_layers and m.hidden_size and m.num_attention_heads and m.num_query_groups
    assert m.ffn_hidden_size and m.rotary_base and m.max_position_embeddings  # checked by the resolver
    return TinyModelSpec(
        num_layers=m.num_layers,
        hidden=m.hidden_size,
        heads=m.num_attention_heads,
        kv_heads=m.num_query_groups,
        intermediate=m.ffn_hidden_size,
        rope_theta=m.rotary_base,
        max_position_embeddings=m.max_position_embeddings,
        seed=demo.seed,
        tie_word_embeddings=not m.untie_embeddings_and_output_weights,
        num_experts=m.num_experts or 0,
        experts_per_token=m.moe_router_topk or 0,
        expert_intermediate=m.moe_ffn_hidden_size or 0,
        tool_vocab=demo.tools,
    )


def build_demo_assets(cfg: RunConfig) -> None:
    """Write (or reuse) the tiny checkpoint and the task splits at the paths the resolver derived. A checkpoint the
    user gave (a warm start for the demo task) is theirs: nothing is built into it."""
    demo = cfg.demo
    assert demo is not None and cfg.ckpt.hf_checkpoint and cfg.rollout.prompt_data
    checkpoint = Path(cfg.ckpt.hf_checkpoint)
    if checkpoint.parent == Path(demo.cache_dir) and checkpoint.name.startswith(DEMO_CHECKPOINT_PREFIX):
        build_tiny_checkpoint(checkpoint, tiny_spec(cfg))
    train, _ = write_task_dataset(
        Path(cfg.rollout.prompt_data).parent,
        demo.task,
        demo.n_train,
        demo.n_eval,
        demo.seed,
        demo.digits,
        tools=demo.tools,
        conversations=cfg.sft_job,
    )
    assert str(train) == cfg.rollout.prompt_data, (train, cfg.rollout.prompt_data)
