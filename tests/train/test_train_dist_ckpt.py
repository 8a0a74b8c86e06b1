"""torch_dist checkpoints: the converter's HF -> torch_dist -> HF round trip is exact, and a checkpoint written
at TP=1 loads at TP=2 (as weights and as the KL reference) with the HF model's log-probs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from train_helpers import SEQS, STARTS, hf_response_stats, make_spec, make_tiny, spawn_world

from rlpipe.tools.convert import main as convert
from rlpipe.train.dist_ckpt import TRACKER_FILE


def test_hf_torch_dist_hf_round_trip_is_exact(tmp_path: Path) -> None:
    hf_dir = make_tiny(tmp_path / "hf", "glm4")  # post-norm layer-spec extension and fused gate_up included
    convert(["hf-to-torch-dist", "--hf", str(hf_dir), "--out", str(tmp_path / "dist"), "--iteration", "7"])
    assert (tmp_path / "dist" / TRACKER_FILE).read_text() == "7"
    assert (tmp_path / "dist" / "iter_0000007" / "metadata.json").exists()
    convert(
        [
            "torch-dist-to-hf",
            "--ckpt",
            str(tmp_path / "dist"),
            "--hf-config",
            str(hf_dir),
            "--out",
            str(tmp_path / "back"),
        ]
    )
    original, back = load_file(hf_dir / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert back.keys() == original.keys()
    assert [k for k in original if not torch.equal(back[k], original[k])] == []
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "glm4"


def _tp2_worker(rank: int, init_file: str, hf_dir: str, dist_dir: str, out_dir: str) -> None:
    from rlpipe.train.distributed import init_distributed, teardown
    from rlpipe.train.trainer import MegatronTrainer

    torch.set_num_threads(1)
    init_distributed(rank, 2, f"file://{init_file}", tensor_parallel=2)
    try:
        trainer = MegatronTrainer(make_spec(Path(hf_dir), tensor_parallel=2))  # random weights until loaded
        trainer.load_reference(Path(dist_dir))
        ref = trainer.compute_ref_log_probs(SEQS, STARTS)
        trainer.load_torch_dist(Path(dist_dir))
        torch.save({"log_probs": trainer.compute_log_probs(SEQS, STARTS), "ref": ref}, Path(out_dir) / f"r{rank}.pt")
    finally:
        teardown()


def test_torch_dist_saved_at_tp1_loads_at_tp2(tmp_path: Path) -> None:
    hf_dir = make_tiny(tmp_path / "hf", "glm4")
    convert(["hf-to-torch-dist", "--hf", str(hf_dir), "--out", str(tmp_path / "dist")])
    spawn_world(_tp2_worker, 2, tmp_path, str(hf_dir), str(tmp_path / "dist"), str(tmp_path))
    expected, _ = hf_response_stats(hf_dir, SEQS, STARTS)
    for rank in range(2):
        out = torch.load(tmp_path / f"r{rank}.pt", weights_only=False)
        for key in ("log_probs", "ref"):
            for got, want in zip(out[key], expected, strict=True):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
