"""Config rules of the SFT job (`algo.loss_type=sft_loss`): the RL loop run on conversations, nothing generated.

The job is Miles' and slime's SFT recipe (`--loss-type sft_loss` with their `sft_rollout.generate_rollout`): each
rollout is the next `rollout.batch_size` conversations of `rollout.prompt_data` (the `input_key` column holds the
messages), trained on the assistant turns. What RL needs and SFT does not is refused with the fix named: groups of
samples, a reference or a critic, partial rollouts. The engine is optional: with `debug.train_only` (Miles'
`--debug-train-only`) there is none, otherwise it serves only generation-based evaluation.
"""

from __future__ import annotations

from rlpipe.config.state import Resolver

SFT_ROLLOUT = "rlpipe.rollout.sft.generate_rollout"


def is_sft(r: Resolver) -> bool:
    return r.d["algo"]["loss_type"] == "sft_loss"


def job(r: Resolver) -> None:
    al, ro = r.d["algo"], r.d["rollout"]
    if not is_sft(r):
        if ro["rollout_function_path"] == SFT_ROLLOUT:
            r.problem(
                "rollout.rollout_function_path",
                f"{SFT_ROLLOUT} serves conversations for supervised training, but algo.loss_type is {al['loss_type']}",
                "algo.loss_type=sft_loss (the SFT job), or another rollout function",
                SFT_ROLLOUT,
            )
        return
    why = "the SFT job (algo.loss_type=sft_loss)"
    if ro["rollout_function_path"] is None:
        r.derive("rollout.rollout_function_path", SFT_ROLLOUT, f"{why}: the next conversations of the data")
    if ro["n_samples"] is None:
        r.derive("rollout.n_samples", 1, f"{why} trains on each conversation once")
    elif ro["n_samples"] != 1:
        r.problem(
            "rollout.n_samples", f"{why} trains on each conversation once", "rollout.n_samples=1", ro["n_samples"]
        )
    if not ro["apply_chat_template"]:
        r.derive("rollout.apply_chat_template", True, f"{why} renders each conversation with the chat template")
    refused = {
        "algo.use_kl_loss": (al["use_kl_loss"], "has no reference term", "algo.use_kl_loss=false"),
        "algo.kl_coef": (al["kl_coef"] > 0, "has no reward to put a KL penalty in", "algo.kl_coef=0"),
        "algo.advantage_estimator": (
            al["advantage_estimator"] in ("ppo", "on_policy_distillation"),
            "trains no critic and distils from no teacher",
            "algo.advantage_estimator=grpo (unused by SFT)",
        ),
        "rollout.partial_rollout": (
            ro["partial_rollout"],
            "generates nothing to resume",
            "rollout.partial_rollout=false",
        ),
        "debug.rollout_only": (r.d["debug"]["rollout_only"], "is training only", "debug.rollout_only=false"),
        "rollout.stream_prompt_data": (
            ro["stream_prompt_data"],
            "reads its conversations at start (only prompts are streamed)",
            "rollout.stream_prompt_data=false",
        ),
    }
    for key, (bad, what, fix) in refused.items():
        if bad:
            r.problem(key, f"{why} {what}", fix, r.get(key))
