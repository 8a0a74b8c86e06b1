"""Run `launch.py`'s main() on many argument lists in one fresh interpreter, one JSON line of findings per case.

    python bad_input_runner.py ROOT < cases.json       # cases: [{"id", "args"}, ...]

Per case: the exit code (None for an exception that escaped), what was printed, the heavy libraries imported by
that case (torch, megatron, ray, sglang, transformers), and the paths under ROOT it created or removed. A config
that resolves never starts a job here: `run_job` is replaced by one that says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
from pathlib import Path

HEAVY = ("torch", "megatron", "ray", "sglang", "transformers")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _heavy() -> set[str]:
    return {name for name in sys.modules if name.split(".")[0] in HEAVY}


def _refuse_job(run: object) -> int:
    raise RuntimeError("ACCEPTED: the config resolved and the job would start")


def main() -> None:
    root = Path(sys.argv[1])
    cases = json.load(sys.stdin)
    import rlpipe.run
    from rlpipe.cli import main as launch

    rlpipe.run.run_job = _refuse_job  # the CLI looks it up at call time
    for case in cases:
        tree, heavy = _tree(root), _heavy()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | None = launch(case["args"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                code = None
                traceback.print_exc(file=err)
        now = _tree(root)
        report = {
            "id": case["id"],
            "code": code,
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "heavy": sorted(_heavy() - heavy),
            "written": sorted(now - tree),
            "removed": sorted(tree - now),
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
