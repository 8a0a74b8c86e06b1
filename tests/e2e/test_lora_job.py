"""LoRA end to end: the two-stage CPU recipe (+experiment=sft-cpu, then +experiment=lora-cpu on its HF export)
learns; a rerun resumes from the adapter-only checkpoint; the exported adapter, merged by peft into the base, is
the exported merged model."""

from __future__ import annotations

import torch
from e2e_helpers import launch, records
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader


def test_lora_grpo_after_sft_learns_resumes_and_exports_what_peft_loads(tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sft = launch(tmp_path, "+experiment=sft-cpu")  # writes hf/40, where lora-cpu starts
    assert sft.returncode == 0, sft.stderr[-3000:]
    first = launch(tmp_path, "+experiment=lora-cpu", "rollout.num_rollout=50")
    assert first.returncode == 0, first.stderr[-3000:]
    second = launch(tmp_path, "+experiment=lora-cpu", "rollout.num_rollout=100")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at rollout 50" in second.stdout

    train = records(tmp_path, "tiny-lora-reverse", "train")
    evals = records(tmp_path, "tiny-lora-reverse", "eval")
    assert [r["rollout_id"] for r in train] == list(range(100))
    rewards = [r["reward_mean"] for r in train]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.1
    assert evals[-1]["reverse/reward_mean"] > evals[0]["reverse/reward_mean"] + 0.2

    # lora.sync=adapter: the engine merges the adapters itself; its weights are the merged sync's bit for bit, so
    # the run is the same run
    adapter = launch(tmp_path, "+experiment=lora-cpu", "rollout.num_rollout=20", "lora.sync=adapter",
                     "run_name=adapter-sync")  # fmt: skip
    assert adapter.returncode == 0, adapter.stderr[-3000:]

    def same(record: dict) -> dict:
        return {k: v for k, v in record.items() if not k.startswith("time_")}

    assert [same(r) for r in records(tmp_path, "adapter-sync", "train")] == [same(r) for r in train[:20]]

    out = tmp_path / "out"
    checkpoint = out / "tiny-lora-reverse" / "checkpoints" / "iter_0000100"
    keys = FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata.keys()
    tensors = [k for k in keys if "decoder." in k or "embedding" in k or "output_layer" in k]
    assert tensors and all("_lora." in k for k in tensors)  # adapters only: the base comes from hf_checkpoint
    model = out / "tiny-lora-reverse" / "hf" / "100"
    base = AutoModelForCausalLM.from_pretrained(out / "tiny-sft-reverse" / "hf" / "40")
    merged_by_peft = PeftModel.from_pretrained(base, model / "adapter").merge_and_unload().state_dict()
    exported = load_file(model / "model.safetensors")
    assert max((merged_by_peft[k] - exported[k]).abs().max().item() for k in exported) < 1e-5
    assert any(not torch.equal(exported[k], base_w) for k, base_w in load_file(
        out / "tiny-sft-reverse" / "hf" / "40" / "model.safetensors").items())  # fmt: skip
