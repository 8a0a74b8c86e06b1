"""`--help` of the training command and `--help GROUP`: the groups and their options (from the config folders), the
main keys with their one-line meaning (from the schema), the flags (from rlpipe.cli.flags), and where to look next.
"""

from __future__ import annotations

import shutil
import textwrap

from pydantic.fields import FieldInfo

from rlpipe.cli.flags import FLAGS
from rlpipe.config.docs import field_type
from rlpipe.config.keys import config_groups, field_info, group_fields, group_options, schema_groups
from rlpipe.config.load import search_path

# The keys most runs set, per group; every key is in `--help GROUP` and docs/config.md.
MAIN_KEYS = (
    "run_name", "output_dir", "seed",
    "ckpt.hf_checkpoint", "ckpt.load", "ckpt.save", "ckpt.save_interval",
    "rollout.prompt_data", "rollout.input_key", "rollout.label_key", "rollout.rm_type", "rollout.num_rollout",
    "rollout.batch_size", "rollout.n_samples", "rollout.max_response_len", "rollout.temperature", "rollout.mode",
    "eval.interval", "eval.datasets",
    "perf.tensor_parallel", "perf.pipeline_parallel", "perf.context_parallel", "perf.expert_parallel",
    "perf.max_tokens_per_gpu",
    "algo.advantage_estimator", "algo.use_kl_loss", "algo.kl_loss_coef", "algo.eps_clip",
    "optim.lr", "optim.weight_decay", "optim.clip_grad",
    "sglang.rollout_num_gpus_per_engine", "sglang.mem_fraction_static",
    "cluster.backend", "cluster.actor_num_nodes", "cluster.actor_num_gpus_per_node", "cluster.rollout_num_gpus",
    "cluster.colocate", "cluster.gpu",
    "lora.rank", "lora.target_modules",
    "log.wandb", "log.tensorboard",
)  # fmt: skip
NEXT = """more:
  --cfg job           every value as the run will use it, derived ones with the reason
  --plan              where each role runs, memory per GPU, time per rollout: will it fit?
  --miles             the same run as a Miles/slime launch script
  docs/config.md      every key with its type, default, bounds and Miles flag
  rlpipe --help       the other commands: plan, import, export, convert, launcher, schema, completion"""


def _width() -> int:
    return min(shutil.get_terminal_size((120, 24)).columns, 120)


def _one_line(info: FieldInfo) -> str:
    """The description's first sentence."""
    text = " ".join((info.description or "").split())
    first, dot, _ = text.partition(". ")
    return first + ("." if dot else "")


def _table(rows: list[tuple[str, str]], indent: int = 2) -> str:
    """Two columns, the second wrapped to the terminal."""
    left = max((len(a) for a, _ in rows), default=0) + 2
    width = max(_width() - indent - left, 30)
    lines = []
    for a, b in rows:
        wrapped = textwrap.wrap(b, width, break_on_hyphens=False) or [""]
        lines.append(" " * indent + a.ljust(left) + wrapped[0])
        lines.extend(" " * (indent + left) + more for more in wrapped[1:])
    return "\n".join(lines)


def _flag_rows() -> list[tuple[str, str]]:
    rows = []
    for flag in FLAGS:
        names = ", ".join(flag.names)
        arg = f" [{flag.arg}]" if flag.optional_arg and flag.arg else f" {flag.arg}" if flag.arg else ""
        rows.append((names + arg, flag.help))
    return rows


def train_help(prog: str) -> str:
    """The whole `--help` text of the training command."""
    dirs = search_path()
    groups = [(g, ", ".join(group_options(dirs, g))) for g in config_groups(dirs)]
    keys = [(key, _one_line(field_info(key))) for key in MAIN_KEYS]
    return "\n\n".join(
        [
            f"usage: {prog} [key=value | group=option | +experiment=NAME ...] [flags]\n"
            "  Compose the config (conf/config.yaml, the groups below, then your overrides), check and resolve it,\n"
            "  then train. Bad config: one message per problem, exit code 2, before anything heavy starts.",
            "config groups (pick an option with group=option, e.g. model=qwen3-4B +experiment=glm4-9b-dapo):\n"
            + _table(groups),
            f"main keys (set any key as key=value, e.g. rollout.n_samples=8; {prog} --help GROUP lists all of a "
            "group's keys):\n" + _table(keys),
            "flags:\n" + _table(_flag_rows()),
            NEXT,
        ]
    )


def group_help(group: str, prog: str) -> str | None:
    """Every key of one schema group (`--help rollout`) with its type, default and meaning; None for no such group."""
    fields = group_fields(group)
    if not fields:
        return None
    dirs = search_path()
    options = group_options(dirs, group)
    head = f"{group}: " + (f"options {', '.join(options)} ({group}=OPTION); " if options else "") + "keys:"
    rows = [
        (f"{key} = {info.default!r}" if not info.is_required() else key, f"{field_type(info)}. "
         f"{' '.join((info.description or '').split())}")
        for key, info in fields
    ]  # fmt: skip
    return head + "\n" + _table(rows) + f"\n\nall groups: {prog} --help"


def unknown_group(group: str) -> str:
    return f"rlpipe: --help {group}: no such group; groups: {', '.join(schema_groups())}"
