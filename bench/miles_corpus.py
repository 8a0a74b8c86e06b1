"""The Miles/slime importer against a corpus of real launch scripts (tests/config/fixtures/miles_corpus: every
slime and Miles script that starts training, and the argv Miles' Python launchers print), with bash as the truth.

Per script: does bash produce a train line (with external commands stubbed, tests/config/miles_corpus_tool.py); does
`import_miles` read it, given what a user gives (`--source-dir` their checkout's scripts/models for model files
sourced from the authors' paths; the variables bash found unset as bash reads them, empty; those the importer asks
for with --set, counted in brackets: a command's output where the script sets one from Miles' model-args helper,
else empty); does the imported experiment resolve
(`--cfg job`'s check, check_paths=False); are the words the importer hands train.py the words bash hands it.
Prints one row per corpus folder and the causes of what does not resolve.

    python bench/miles_corpus.py             # ~4 minutes on 2 cores (bash runs every script once)
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "config"))

import miles_corpus_tool as corpus  # noqa: E402

from rlpipe.config import CONF_DIR, ConfigError, load  # noqa: E402
from rlpipe.config.miles import import_miles, to_experiment_yaml  # noqa: E402
from rlpipe.config.miles.importer import MissingSources, UnsetVariables  # noqa: E402
from rlpipe.config.miles.shell import Script  # noqa: E402

# Checkpoint names of the families rlpipe converts (qwen2, qwen3, qwen3_moe, llama, glm4); Qwen3.5/3.6 are others.
BUILT_FAMILY = re.compile(r"(qwen2\.5|qwen3)-|glm-4-|glm-z1-|glm4-|(meta-)?llama-?3", re.IGNORECASE)


def measure(path: Path, conf: Path) -> dict[str, object]:
    """One corpus entry: bash's train words, the importer's, and whether the import resolves (or why not)."""
    variables = dict(corpus.DEFAULT_ENV)
    if path.suffix == ".argv":
        bash = corpus.argv_file_words(path)
    else:
        run = corpus.run_script(path)
        bash = run.argv
        variables.update(dict.fromkeys(run.unbound, ""))  # what bash (without set -u) reads for them
    text = path.read_text()
    row: dict[str, object] = {"bash": bash is not None}
    source_dirs = tuple(d for d in [corpus.models_dir(path)] if d is not None)  # the user's checkout: --source-dir
    try:
        result = import_miles(
            text, base_dir=path.parent, variables=variables, script_name=path.name, source_dirs=source_dirs
        )
    except MissingSources as err:
        row["cause"] = f"import: {str(err)[:90]}"
        return row
    except UnsetVariables as err:  # a user gives them (--set NAME=...): a command's output, or as bash reads them
        given = {
            name: corpus.model_args_output(err.printed_by.get(name, "")) or ""
            for name in err.missing
            if name.isidentifier()
        }
        if len(given) < len(err.missing):
            row["cause"] = f"import: {str(err)[:90]}"
            return row
        row["asked"] = True
        variables.update(given)
        try:
            result = import_miles(
                text, base_dir=path.parent, variables=variables, script_name=path.name, source_dirs=source_dirs
            )
        except MissingSources as err:  # a models file named by a variable the user gave empty
            row["cause"] = f"import: {str(err)[:90]}"
            return row
    row["imported"] = True
    script = Script(path.parent, CONF_DIR, dict(variables), path, source_dirs)
    script.read(text)
    words = script.train[1] if script.train else None
    row["same"] = bash is not None and words is not None and [Path(bash[0]).name, *bash[1:]][1:] == words
    name = "corpus"
    (conf / "experiment" / f"{name}.yaml").write_text(to_experiment_yaml(result, name))
    try:
        run = load([f"experiment={name}"], conf_dir=conf, check_paths=False)
    except ConfigError as err:
        first = err.problems[0]
        row["cause"] = f"{first.key}: {first.message[:70]}"
        return row
    # What rlpipe cannot train (an MLA or Mamba model, FP8 training) and a plug-in module that is not here are
    # warnings when only printing, refusals at launch: counted apart from what resolves.
    refusals = [w for w in run.warnings if w.startswith("miles.extra_args:") and "kept for --miles" not in w]
    plugins = [w for w in run.warnings if "not found (is it on PYTHONPATH?)" in w]
    if refusals:
        row["refused"] = True
        row["cause"] = f"refused (cannot train): {refusals[0].removeprefix('miles.extra_args: ')[:70]}"
    elif plugins:
        row["plugin"] = True
        row["cause"] = f"user plug-in: {plugins[0][:80]}"
    else:
        row["resolved"] = True
        # The model family is read from the checkpoint's config.json at launch (not here: no checkpoints): judged
        # by the checkpoint's name, a family rlpipe converts, or one a launch would refuse (Gemma, gpt-oss, ...).
        row["family"] = bool(BUILT_FAMILY.match(Path(str(run.cfg.ckpt.hf_checkpoint)).name))
    return row


def _row(name: str, c: Counter[str]) -> str:
    cells = [
        c["scripts"], c["bash"], f"{c['imported']} ({c['asked']})", f"{c['resolved']} ({c['family']})",
        c["refused"], c["plugin"], c["same"],
    ]  # fmt: skip
    return f"| {name} | " + " | ".join(str(cell) for cell in cells) + " |"


def main() -> int:
    conf = Path(tempfile.mkdtemp()) / "conf"
    shutil.copytree(CONF_DIR, conf)
    groups: dict[str, Counter[str]] = {}
    causes: Counter[str] = Counter()
    for path in corpus.corpus():
        rel = path.relative_to(corpus.CORPUS_DIR)
        group = rel.parts[0] + ("/argv" if path.suffix == ".argv" else "")
        row = measure(path, conf)
        counts = groups.setdefault(group, Counter())
        counts["scripts"] += 1
        counts.update(
            key
            for key in ("bash", "asked", "imported", "resolved", "family", "refused", "plugin", "same")
            if row.get(key)
        )
        if "cause" in row:
            causes[str(row["cause"])] += 1
    shutil.rmtree(conf.parent, ignore_errors=True)
    print(
        "| corpus | scripts | bash train line | imported (after --set) | resolved (a family rlpipe builds) "
        "| refused: cannot train | the user's plug-in module | same words as bash |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total: Counter[str] = Counter()
    for group, counts in groups.items():
        total.update(counts)
        print(_row(group, counts))
    print(_row("**all**", total))
    print("\nwhat the rest stops on (first problem):")
    for cause, n in causes.most_common():
        print(f"  {n:3}  {cause}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
