"""Rollout: engines (in-process HF, SGLang), generate_rollout, filters, buffers, eval."""
