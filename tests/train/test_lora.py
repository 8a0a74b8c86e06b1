"""LoRA on the Megatron trainer, against independent references.

- The LoRA forward equals HF's forward of the merged weights (W + alpha/r B A, computed here by hand), and peft's own
  forward of the base model with the adapter folder the trainer wrote (peft loads it, by name, with its scaling).
- A step changes the adapters only; the optimizer holds adapters only; with the adapters off the model is the base
  (the KL reference under LoRA).
- Checkpoints hold the adapters (and their optimizer state) only, and resume to the identical next step.
- TP=2 (with and without sequence parallelism) gives TP=1's log-probs, loss, grad norm, merged weights and adapters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import SEQS, STARTS, hf_response_stats, init_layout, make_spec, make_tiny, spawn_world
from train_helpers import sum_log_prob_loss as loss_of

from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint
from rlpipe.train.hf_export import export_hf
from rlpipe.train.lora import peft_name
from rlpipe.train.peft_adapter import load_adapter, save_adapter
from rlpipe.train.spec import LoraSpec
from rlpipe.train.trainer import MegatronTrainer

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPEC = LoraSpec(rank=4, alpha=8.0, dropout=0.0, projections=ALL)
HALF = LoraSpec(rank=2, alpha=2.0, dropout=0.0, projections=("q_proj", "v_proj", "down_proj"))


def _random_adapters(trainer: MegatronTrainer, seed: int = 7) -> dict[str, torch.Tensor]:
    """Non-zero whole adapters (B too) for every adapter the trainer has, by peft name."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(t.shape, generator=generator) * 0.3 for name, t in trainer.adapter_named_tensors()}


def _lora_trainer(folder: Path, spec: LoraSpec = SPEC, **overrides: object) -> MegatronTrainer:
    trainer = MegatronTrainer(make_spec(folder, lora=spec, **overrides))
    trainer.load_hf(folder)
    return trainer


def _merged_by_hand(folder: Path, adapters: dict[str, torch.Tensor], spec: LoraSpec) -> dict[str, torch.Tensor]:
    weights = load_file(folder / "model.safetensors")
    for name in weights:
        a = f"base_model.model.{name.removesuffix('.weight')}.lora_A.weight"
        if a in adapters:
            b = a.replace("lora_A", "lora_B")
            weights[name] = weights[name] + spec.scaling * adapters[b] @ adapters[a]
    return weights


@pytest.mark.parametrize("spec", [SPEC, HALF], ids=["all-linear", "q,v,down"])
def test_lora_forward_equals_the_merged_model_and_peft(world_of_one, tmp_path: Path, spec: LoraSpec) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = make_tiny(tmp_path / "base", "qwen2")
    trainer = _lora_trainer(folder, spec)
    names = [n for n, _ in trainer.adapter_named_tensors()]
    assert len(names) == 2 * 2 * len(spec.projections)  # 2 layers x (A, B) per projection
    assert peft_name(1, trainer.adapters[0].site, spec.projections[0], "B") in names
    adapters = _random_adapters(trainer)
    trainer.load_adapters(adapters)
    ours = trainer.compute_log_probs(SEQS, STARTS)

    merged = _merged_by_hand(folder, adapters, spec)
    exported = dict(trainer.hf_named_tensors())
    assert exported.keys() == merged.keys()
    assert max((exported[k] - merged[k]).abs().max().item() for k in merged) < 1e-5
    export_hf(list(merged.items()), folder, tmp_path / "merged")
    reference, _ = hf_response_stats(tmp_path / "merged", SEQS, STARTS)
    assert max((a - b).abs().max().item() for a, b in zip(ours, reference, strict=True)) < 1e-5

    save_adapter(trainer.adapter_named_tensors(), spec, str(folder), tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), tmp_path / "adapter").eval()
    with torch.no_grad():
        for seq, start, lp in zip(SEQS, STARTS, ours, strict=True):
            logits = peft_model(torch.tensor([seq])).logits[0]
            want = torch.log_softmax(logits, -1)[start - 1 : len(seq) - 1].gather(
                -1, torch.tensor(seq[start:])[:, None]
            )
            assert (want.squeeze(-1) - lp).abs().max().item() < 1e-5  # peft read every matrix, scaled alpha / r
    assert load_adapter(tmp_path / "adapter").keys() == set(names)


def test_the_adapters_gradient_is_peft_s(world_of_one, tmp_path: Path) -> None:
    """One SGD step at lr 1 moves every adapter matrix by minus peft's gradient of the same loss."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = make_tiny(tmp_path / "base", "qwen2")
    trainer = _lora_trainer(folder, optimizer="sgd", lr=1.0, micro_batch_size=8)
    adapters = _random_adapters(trainer, seed=3)
    trainer.load_adapters(adapters)
    save_adapter(trainer.adapter_named_tensors(), SPEC, str(folder), tmp_path / "adapter")
    trainer.train_step(SEQS, STARTS, loss_of(denominator=25.0))
    stepped = dict(trainer.adapter_named_tensors())

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), tmp_path / "adapter",
                                           is_trainable=True)  # fmt: skip
    loss = torch.zeros(())
    for seq, start in zip(SEQS, STARTS, strict=True):
        log_probs = torch.log_softmax(peft_model(torch.tensor([seq])).logits[0], -1)[start - 1 : len(seq) - 1]
        loss = loss - log_probs.gather(-1, torch.tensor(seq[start:])[:, None]).sum() / 25.0
    loss.backward()
    grads = {n.replace(".default", ""): p.grad for n, p in peft_model.named_parameters() if p.grad is not None}
    assert grads.keys() == stepped.keys()
    for name, grad in grads.items():
        assert (stepped[name] - (adapters[name] - grad)).abs().max().item() < 1e-5, name


def test_a_step_trains_the_adapters_only_and_the_base_stays_the_reference(world_of_one, tmp_path: Path) -> None:
    folder = make_tiny(tmp_path / "base", "qwen2")
    base_log_probs, _ = hf_response_stats(folder, SEQS, STARTS)
    trainer = _lora_trainer(folder, lr=1e-2)
    fresh = trainer.compute_log_probs(SEQS, STARTS)  # B = 0: the base model exactly
    assert max((a - b).abs().max().item() for a, b in zip(fresh, base_log_probs, strict=True)) < 1e-5
    before = {n: p.detach().clone() for n, p in trainer._module.named_parameters()}
    adapters_before = dict(trainer.adapter_named_tensors())
    trainer.train_step(SEQS, STARTS, loss_of(denominator=25.0))
    after = dict(trainer._module.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("_lora." in n for n in changed)  # every base tensor bit-identical
    assert any(not torch.equal(adapters_before[n], t) for n, t in trainer.adapter_named_tensors() if "lora_B" in n)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    adapter_params = {id(p) for n, p in trainer._module.named_parameters() if "_lora." in n}
    assert optimized == adapter_params and len(adapter_params) == 2 * 2 * len(ALL)
    reference = trainer.compute_ref_log_probs(SEQS, STARTS)  # adapters off: the frozen base
    trained = trainer.compute_log_probs(SEQS, STARTS)
    assert max((a - b).abs().max().item() for a, b in zip(reference, base_log_probs, strict=True)) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(trained, base_log_probs, strict=True)) > 1e-4


def test_a_lora_checkpoint_holds_the_adapters_and_resumes_exactly(world_of_one, tmp_path: Path) -> None:
    folder = make_tiny(tmp_path / "base", "qwen2")
    overrides = {"lr": 1e-2, "lr_decay_style": "linear", "lr_decay_iters": 10}
    first = _lora_trainer(folder, **overrides)
    first.train_step(SEQS, STARTS, loss_of(denominator=25.0))
    first.save_checkpoint(tmp_path / "ckpt", iteration=1)
    expected = first.train_step(SEQS, STARTS, loss_of(denominator=25.0))
    expected_weights = dict(first.hf_named_tensors())

    saved = (tmp_path / "ckpt" / "iter_0000001").rglob("*")
    stored = sum(f.stat().st_size for f in saved if f.is_file())
    assert stored < (folder / "model.safetensors").stat().st_size  # adapters and their Adam moments, not the model
    again = _lora_trainer(folder, **overrides)  # the base from the HF folder, the rest from the checkpoint
    assert again.load_checkpoint(tmp_path / "ckpt") == (1, {})
    assert again.train_step(SEQS, STARTS, loss_of(denominator=25.0)) == expected
    assert all(torch.equal(expected_weights[k], w) for k, w in again.hf_named_tensors())


def _worker(rank: int, init_file: str, sizes: dict, folder: str, adapters: dict, out: str) -> None:
    from rlpipe.train.distributed import teardown

    torch.set_num_threads(1)
    init_layout(rank, init_file, 2, sizes)
    try:
        trainer = _lora_trainer(Path(folder), optimizer="sgd", lr=0.5, **sizes)
        trainer.load_adapters(adapters)
        result = {"log_probs": trainer.compute_log_probs(SEQS, STARTS)}
        result["metrics"] = trainer.train_step(SEQS, STARTS, loss_of(denominator=25.0))
        result["merged"] = dict(trainer.hf_named_tensors())
        result["adapters"] = dict(trainer.adapter_named_tensors())
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        teardown()


@pytest.mark.parametrize("sizes", [{"tensor_parallel": 2}, {"tensor_parallel": 2, "sequence_parallel": True}],
                         ids=["tp2", "tp2_sp"])  # fmt: skip
def test_tp2_lora_equals_tp1(world_of_one, tmp_path: Path, sizes: dict) -> None:
    folder = make_tiny(tmp_path / "base", "qwen2")
    single = _lora_trainer(folder, optimizer="sgd", lr=0.5)
    adapters = _random_adapters(single)
    single.load_adapters(adapters)
    want = {"log_probs": single.compute_log_probs(SEQS, STARTS)}
    want["metrics"] = single.train_step(SEQS, STARTS, loss_of(denominator=25.0))
    want["merged"], want["adapters"] = dict(single.hf_named_tensors()), dict(single.adapter_named_tensors())
    assert max((want["adapters"][k] - adapters[k]).abs().max().item() for k in adapters) > 1e-3  # it trained

    spawn_world(_worker, 2, tmp_path, sizes, str(folder), adapters, str(tmp_path))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert max((a - b).abs().max().item() for a, b in zip(got["log_probs"], want["log_probs"], strict=True)) < 1e-5
        assert got["metrics"]["loss"] == pytest.approx(want["metrics"]["loss"], abs=1e-5)
        assert got["metrics"]["grad_norm"] == pytest.approx(want["metrics"]["grad_norm"], rel=1e-4)
        for key in ("merged", "adapters"):
            assert got[key].keys() == want[key].keys()
            assert max((got[key][k] - want[key][k]).abs().max().item() for k in want[key]) < 1e-5, key


def test_adapter_sync_gives_each_engine_the_trainer_s_merged_weights(world_of_one, tmp_path: Path) -> None:
    """lora.sync=adapter: after each sync the engine's effective weights are the trainer's merged ones, for the HF
    engine (which merges) and through SGLang's adapter endpoints (the strict fake serves the adapter by name)."""
    from rlpipe.rollout.hf_engine import HFEngine
    from rlpipe.rollout.sglang.client import SGLangEngine
    from rlpipe.train.peft_adapter import adapter_config
    from tests.fakes.fake_sglang import FakeSGLang

    folder = build_tiny_checkpoint(tmp_path / "base", TinyModelSpec())  # the engines need its tokenizer too
    trainer = _lora_trainer(folder, lr=1e-2)
    trainer.load_adapters(_random_adapters(trainer))
    config = adapter_config(SPEC, str(folder))
    hf_engine = HFEngine(folder)
    fake = FakeSGLang(folder, max_lora_rank=SPEC.rank).start()
    try:
        client = SGLangEngine(fake.url, [fake.url], tp_size=2)
        for sync in range(2):  # the second adapter replaces the first
            named = trainer.adapter_named_tensors()
            hf_engine.load_lora_adapter("rlpipe_lora", named, config)
            client.load_lora_adapter("rlpipe_lora", named, config)
            merged = dict(trainer.hf_named_tensors())
            for engine in (hf_engine, fake.adapters["rlpipe_lora"]):
                served = engine.model.state_dict()
                assert max((served[k] - merged[k]).abs().max().item() for k in merged) < 1e-6, sync
            trainer.train_step(SEQS[:4], STARTS[:4], loss_of(denominator=25.0))  # ids within the tiny vocabulary
        assert [p for p in fake.paths() if "lora" in p] == [
            "/load_lora_adapter_from_tensors", "/unload_lora_adapter", "/load_lora_adapter_from_tensors",
        ]  # fmt: skip
        assert fake.received_adapters[0][2]["r"] == SPEC.rank and client.weight_version == 2
        base = fake.engine.model.state_dict()  # requests without the adapter's name get the base model
        assert all(torch.equal(base[k], w) for k, w in load_file(folder / "model.safetensors").items())
    finally:
        fake.stop()
