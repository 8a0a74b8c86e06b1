"""The run folder at the start of a run: the earlier run moved aside (resume=false), the resolved config, its
preflight plan (plan.md, plan.json) and the run's identity written, so the next launch can tell a resume from a
collision (`rlpipe.config.identity`)."""

from __future__ import annotations

import time
from pathlib import Path

from rlpipe.config import Resolved
from rlpipe.config.files import TRACKER_FILE
from rlpipe.config.identity import has_progress, write_identity
from rlpipe.config.render import to_yaml
from rlpipe.plan import plan_of
from rlpipe.plan.render import to_json, to_markdown


def prepare_run_folder(run: Resolved) -> Path:
    """The run folder, ready: with resume=false the earlier run's folders are renamed (never deleted) first."""
    cfg = run.cfg
    run_dir = Path(cfg.output_dir) / cfg.run_name
    save = Path(cfg.ckpt.save) if cfg.ckpt.save else None
    if cfg.resume is False:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        earlier = [run_dir] if has_progress(run_dir, save) else []
        if save is not None and (save / TRACKER_FILE).exists() and not save.resolve().is_relative_to(run_dir.resolve()):
            earlier.append(save)  # checkpoints kept outside the run folder (Miles' --save /root/<model>_miles/)
        for folder in earlier:
            aside = folder.with_name(f"{folder.name}.before-{stamp}")
            folder.rename(aside)
            print(f"rlpipe: resume=false: the earlier run in {folder} is now in {aside}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "resolved_config.yaml").write_text(to_yaml(run))
    plan = plan_of(run)  # what --plan prints, kept beside the config it was made from
    (run_dir / "plan.md").write_text(to_markdown(plan))
    (run_dir / "plan.json").write_text(to_json(plan))
    config = cfg.model_dump()
    write_identity(run_dir, config)
    if save is not None:
        write_identity(save, config)
    return run_dir
