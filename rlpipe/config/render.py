"""Showing a resolved run: YAML with the reason beside every derived value, and the start-of-run table.

Both are shown or saved (outputs/<run>/resolved_config.yaml), so secrets go through rlpipe.config.secrets first;
the run itself keeps the real values."""

from __future__ import annotations

from typing import Any

import yaml

from rlpipe.config.resolve import Resolved
from rlpipe.config.secrets import redact, redact_text


def _scalar(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
        .strip()
        .removesuffix("\n...")
        .strip()
    )


def _emit(node: dict[str, Any], prefix: str, depth: int, reasons: dict[str, str], out: list[str]) -> None:
    pad = "  " * depth
    for key, value in node.items():
        path = f"{prefix}{key}"
        note = f"  # {redact_text(reasons[path])}" if path in reasons else ""
        if isinstance(value, dict) and value:
            out.append(f"{pad}{key}:{note}")
            _emit(value, path + ".", depth + 1, reasons, out)
        else:
            out.append(f"{pad}{key}: {_scalar(value)}{note}")


def to_yaml(run: Resolved, package: str | None = None) -> str:
    """The whole resolved config as YAML, secrets redacted; derived values carry `# derived: ...` comments, then
    the topology. `package` (a dotted key, Hydra's `--cfg job -p rollout`): only that part, under its key."""
    reasons = {d.key: d.reason for d in run.derivations}
    out: list[str] = []
    node = redact(run.cfg.model_dump(mode="json"))
    if package:
        *parents, leaf = package.split(".")
        for name in parents:
            node = node[name]
        _emit({leaf: node[leaf]}, package.rpartition(".")[0] + "." if parents else "", 0, reasons, out)
        return "\n".join(out) + "\n"
    _emit(node, "", 0, reasons, out)
    out.append("# topology (derived):")
    out.extend(f"#   {k}: {v}" for k, v in run.topology.model_dump().items())
    out.extend(f"# warning: {redact_text(w)}" for w in run.warnings)
    return "\n".join(out) + "\n"


def derived_rows(run: Resolved) -> list[tuple[str, str, str]]:
    """(key, value, reason) for the table: every derived value in the order derived (secrets redacted), except
    that a dataset's inherited sampling fields fold into one row (the YAML of `--cfg job` keeps each with its
    source) and a mapping shows its keys."""
    rows: list[tuple[str, str, str]] = []
    inherited: dict[str, list[str]] = {}
    for d in run.derivations:
        head, _, leaf = d.key.rpartition(".")
        if d.key.startswith("eval.datasets.") and d.reason.startswith("inherited from"):
            if head not in inherited:
                inherited[head] = []
                rows.append((head, "", "inherited: dataset > eval > rollout"))
            inherited[head].append(f"{leaf}={_scalar(redact(d.value, d.key))}")
            continue
        value = redact(d.value, d.key)
        shown = "{" + ", ".join(value) + "}" if isinstance(value, dict) else _scalar(value)
        rows.append((d.key, shown, redact_text(d.reason)))
    return [(key, ", ".join(inherited[key]) if key in inherited else value, why) for key, value, why in rows]


def plan_summary(run: Resolved) -> str:
    """The preflight plan in one line: each phase's bytes on its GPU, and the time per rollout (plan.md has it all)."""
    from rlpipe.plan import plan_of
    from rlpipe.plan.memory import human_bytes

    plan = plan_of(run)
    phases = ", ".join(f"{p.name} {human_bytes(p.total)}" for p in plan.phases)
    if plan.gpu is None:
        return f"{phases} per trainer process (no GPU to check against)"
    line = f"{phases} of a {plan.gpu.name}'s {human_bytes(plan.gpu.memory)}"
    return line + (f"; ~{plan.timing.rollout_s:,.0f} s per rollout" if plan.timing else "")


def print_summary(run: Resolved) -> None:
    """The start-of-run table: the headline values, every derived value with its reason, then warnings; secrets
    redacted (the table goes to the terminal and to job logs)."""
    from rich.console import Console
    from rich.table import Table

    cfg, topo = run.cfg, run.topology
    table = Table(title=f"rlpipe run `{redact_text(cfg.run_name)}`", show_lines=False, title_justify="left")
    table.add_column("key", style="cyan", no_wrap=True)
    table.add_column("value", style="bold", overflow="fold")
    table.add_column("why (derived values)")
    headline = {
        "model": f"{cfg.model.name} ({cfg.model.num_layers} layers, hidden {cfg.model.hidden_size})",
        "ckpt.hf_checkpoint": cfg.ckpt.hf_checkpoint,
        "rollout.prompt_data": cfg.rollout.prompt_data,
        "algo": f"{cfg.algo.advantage_estimator} / {cfg.algo.loss_type}",
        "optim.lr": cfg.optim.lr,
        "rollout.num_rollout": cfg.rollout.num_rollout,
        "placement": f"{topo.device}, {topo.actor_gpus} trainer rank(s), DP {topo.data_parallel}, "
        f"{cfg.rollout.engine} engine x {topo.num_engines}, {cfg.cluster.backend}",
        "plan": plan_summary(run),
    }
    for key, value in headline.items():
        table.add_row(key, redact_text(str(value)), redact_text(run.reason(key) or ""))
    for key, value, reason in derived_rows(run):
        if key not in headline:
            table.add_row(key, value, reason)
    console = Console(stderr=False)
    console.print(table)
    for warning in run.warnings:
        console.print(f"[yellow]warning[/yellow] {redact_text(warning)}")
