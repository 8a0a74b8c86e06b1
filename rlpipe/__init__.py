"""rlpipe: declarative RL post-training of LLMs (Hydra + pydantic config, Megatron-core trainer, SGLang/HF rollout)."""

__version__ = "0.1.0"
