"""The Miles/slime importer against a corpus of real launch scripts (tests/config/fixtures/miles_corpus: every
slime and Miles script that starts training, and the argv Miles' Python launchers print), with bash as the truth.

Per script: does bash produce a train line (with external commands stubbed, tests/config/miles_corpus_tool.py); does
`import_miles` read it (the variables bash found unset given as bash reads them, empty; those the importer asks for
given the same way, as a user would with --set, counted in brackets); does the imported experiment resolve
(`--cfg job`'s check, check_paths=False); are the words the importer hands train.py the words bash hands it.
Prints one row per corpus folder and the causes of what does not resolve.

    python bench/miles_corpus.py             # ~4 minutes on 2 cores (bash runs every script once)
"""

from __future__ import annotations

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
from rlpipe.config.miles.importer import UnsetVariables  # noqa: E402
from rlpipe.config.miles.shell import Script  # noqa: E402


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
    script = Script(path.parent, CONF_DIR, dict(variables), path)
    script.read(text)
    words = script.train[1] if script.train else None
    row["same"] = bash is not None and words is not None and [Path(bash[0]).name, *bash[1:]][1:] == words
    try:
        result = import_miles(text, base_dir=path.parent, variables=variables, script_name=path.name)
    except UnsetVariables as err:  # a user gives them (--set NAME=...): here as bash reads them, empty
        given = {name: "" for name in err.missing if name.isidentifier()}
        if len(given) < len(err.missing):
            row["cause"] = f"import: {str(err)[:90]}"
            return row
        row["asked"] = True
        result = import_miles(text, base_dir=path.parent, variables={**variables, **given}, script_name=path.name)
    row["imported"] = True
    name = "corpus"
    (conf / "experiment" / f"{name}.yaml").write_text(to_experiment_yaml(result, name))
    try:
        load([f"experiment={name}"], conf_dir=conf, check_paths=False)
        row["resolved"] = True
    except ConfigError as err:
        first = err.problems[0]
        row["cause"] = f"{first.key}: {first.message[:70]}"
    return row


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
        counts.update(key for key in ("bash", "asked", "imported", "resolved", "same") if row.get(key))
        if "cause" in row:
            causes[str(row["cause"])] += 1
    shutil.rmtree(conf.parent, ignore_errors=True)
    print("| corpus | scripts | bash train line | imported (after --set) | resolved | same words as bash |")
    print("|---|---:|---:|---:|---:|---:|")
    total: Counter[str] = Counter()
    for group, counts in groups.items():
        total.update(counts)
        print(f"| {group} | {counts['scripts']} | {counts['bash']} | {counts['imported']} ({counts['asked']}) | "
              f"{counts['resolved']} | {counts['same']} |")  # fmt: skip
    print(f"| **all** | {total['scripts']} | {total['bash']} | {total['imported']} ({total['asked']}) | "
          f"{total['resolved']} | {total['same']} |")  # fmt: skip
    print("\nwhat the rest stops on (first problem):")
    for cause, n in causes.most_common():
        print(f"  {n:3}  {cause}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
