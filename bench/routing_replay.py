"""Rollout routing replay (R3) on a tiny Qwen3-MoE: what it fixes and what it costs.

An HF engine over the trainer's own weights whose top-k breaks near-ties differently (a small deterministic error
in its selection scores, as another kernel or precision gives) samples responses and records its experts. The
Megatron trainer (fp32, CPU) then scores them without and with replay. Printed: tokens routed differently, the
engine-vs-trainer log-prob difference, and the trainer's scoring time with replay over without (interleaved
rounds, median; the replay cost is laying the routes out per micro-batch and gathering scores at given indices).

    python bench/routing_replay.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "train"))
from test_routing_replay import (
    MOE,
    _disagreements,
    _mismatch,
    _trainer_choices,
    sample_with_tie_breaking_engine,
)
from train_helpers import make_spec, make_tiny

from rlpipe.data.tiny_model import build_char_tokenizer
from rlpipe.train.distributed import init_single_process, teardown
from rlpipe.train.trainer import MegatronTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    init_single_process()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny(Path(tmp) / "moe", "qwen3_moe", seed=3, **MOE)
        build_char_tokenizer().save_pretrained(folder)
        rollout = sample_with_tie_breaking_engine(folder, n=8, max_new_tokens=24)
        trainer = MegatronTrainer(make_spec(folder, micro_batch_size=1, routing_replay=True))
        trainer.load_hf(folder)
        tokens = sum(r.shape[0] for r in rollout["routes"]) * 2  # routed tokens x 2 layers
        for replay in (False, True):
            log_probs, maps = _trainer_choices(trainer, rollout, replay)
            print(
                f"replay={replay!s:5}  tokens x layers routed differently: {_disagreements(maps, rollout, 2)} / "
                f"{tokens}   mean |engine - trainer| log-prob: {_mismatch(log_probs, rollout):.2e}   max: "
                f"{max((lp - e).abs().max().item() for lp, e in zip(log_probs, rollout['log_probs'], strict=True)):.2e}"
            )
        timed = {False: [], True: []}
        for _ in range(args.rounds):
            for replay in (False, True):
                start = time.perf_counter()
                trainer.compute_log_probs(
                    rollout["seqs"], rollout["starts"], routes=rollout["routes"] if replay else None
                )
                timed[replay].append(time.perf_counter() - start)
        free, replayed = statistics.median(timed[False]), statistics.median(timed[True])
        print(
            f"scoring {len(rollout['seqs'])} samples: {free * 1e3:.0f} ms free, {replayed * 1e3:.0f} ms replayed "
            f"(x{replayed / free:.2f})"
        )
    teardown()


if __name__ == "__main__":
    main()
