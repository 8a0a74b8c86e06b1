"""Every real slime/Miles launch script of the corpus (tests/config/fixtures/miles_corpus) imports cleanly: an
experiment whose YAML holds no unexpanded word, or one clear refusal naming the variables still needed; never a
crash. The argv Miles' Python launchers print import word for word. (How many resolve, and how close each script
comes to bash's own expansion, is measured by bench/miles_corpus.py: bash runs every script there.)"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from miles_corpus_tool import CORPUS_DIR, DEFAULT_ENV, corpus, models_dir

from rlpipe.config.miles import import_miles, to_experiment_yaml
from rlpipe.config.miles.expansion import MISSING
from rlpipe.config.miles.importer import UnsetVariables
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
