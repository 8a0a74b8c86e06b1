"""Every real slime/Miles launch script of the corpus (tests/config/fixtures/miles_corpus) imports cleanly: an
experiment whose YAML holds no unexpanded word, or one clear refusal naming the variables still needed; never a
crash. The argv Miles' Python launchers print import word for word. (How many resolve, and how close each script
comes to bash's own expansion, is measured by bench/miles_corpus.py: bash runs every script there.)"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from miles_corpus_tool import CORPUS_DIR, DEFAULT_ENV, corpus, model_args_output, models_dir
from miles_helpers import load_imported, same_run

from rlpipe.config import ConfigError
from rlpipe.config.miles import ImportResult, export_miles, import_miles, to_experiment_yaml
from rlpipe.config.miles.expansion import MISSING
from rlpipe.config.miles.importer import MissingSources, UnsetVariables
from rlpipe.config.miles.shell import BashSyntaxError, Script

CONF = Path(__file__).resolve().parents[2] / "conf"
ENTRIES = corpus()


def test_the_corpus_is_there() -> None:
    assert (
        len([p for p in ENTRIES if p.suffix == ".sh"]) >= 140 and len([p for p in ENTRIES if p.suffix == ".argv"]) >= 50
    )


@pytest.mark.parametrize("path", ENTRIES, ids=[p.relative_to(CORPUS_DIR).as_posix() for p in ENTRIES])
def test_every_script_imports_or_says_what_it_needs(path: Path) -> None:
    text = path.read_text()
    try:
        result = import_miles(  # as a user would: --source-dir their checkout's scripts/models
            text,
            base_dir=path.parent,
            variables=dict(DEFAULT_ENV),
            script_name=path.name,
            source_dirs=(models_dir(path),),
        )
    except UnsetVariables as err:
        assert err.missing and MISSING not in str(err)  # named, and shown as ${NAME} or the word itself
        return
    except BashSyntaxError as err:
        assert str(err)  # a construct it does not follow, said in one line
        return
    assert MISSING not in to_experiment_yaml(result, "imported")


ARGV = [p for p in ENTRIES if p.suffix == ".argv"]


@pytest.mark.parametrize("path", ARGV, ids=[p.relative_to(CORPUS_DIR).as_posix() for p in ARGV])
def test_a_printed_launcher_argv_is_read_word_for_word(path: Path) -> None:
    words = shlex.split(path.read_text(), comments=True)
    script = Script(path.parent, CONF, dict(DEFAULT_ENV), path)
    script.read(path.read_text())
    assert script.train is not None
    start = next(i for i, w in enumerate(words) if Path(w).name == script.train[0])
    assert script.train[1] == words[start + 1 :]


def _import_as_a_user(path: Path) -> ImportResult | None:
    """Import a corpus entry giving what a user gives: --source-dir their checkout's models, and --set for what the
    importer asks (the output of Miles' model-args helper where the script reads it, else empty, as bash reads an
    unset variable); None when the train line needs a word only another command computes."""
    text, variables = path.read_text(), dict(DEFAULT_ENV)
    kwargs = {"base_dir": path.parent, "script_name": path.name, "source_dirs": (models_dir(path),)}
    try:
        return import_miles(text, variables=variables, **kwargs)
    except UnsetVariables as err:
        if not all(name.isidentifier() for name in err.missing):
            return None
        given = {name: model_args_output(err.printed_by.get(name, "")) or "" for name in err.missing}
        try:
            return import_miles(text, variables={**variables, **given}, **kwargs)
        except MissingSources:  # a models file named by a variable given empty
            return None


@pytest.mark.parametrize("path", ENTRIES, ids=[p.relative_to(CORPUS_DIR).as_posix() for p in ENTRIES])
def test_a_script_that_resolves_round_trips_through_the_export(path: Path, conf_copy: Path) -> None:
    """import -> resolve -> --miles -> import -> resolve is the same run, extra flags included, word for word; a
    script that does not resolve says why, key and fix, for each problem."""
    result = _import_as_a_user(path)
    if result is None:
        return
    try:
        run = load_imported(result, conf_copy.parent, "corpus")
    except ConfigError as err:
        assert err.problems and all(p.key and p.fix for p in err.problems), err
        return
    exported = export_miles(run)  # a secret is a required environment variable there (`${NAME:?}`): give one
    secrets = dict.fromkeys(re.findall(r"\$\{(RLPIPE_SECRET_\w+):\?\}", exported), "given")
    again = load_imported(import_miles(exported, base_dir=None, variables=secrets), conf_copy.parent, "again")
    same_run(again, run)
    assert again.cfg.miles.extra_args == run.cfg.miles.extra_args


@pytest.fixture(scope="module")
def conf_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of conf/ for the module's imports (each test writes its experiment files there)."""
    conf = tmp_path_factory.mktemp("corpus") / "conf"
    shutil.copytree(CONF, conf)
    return conf
