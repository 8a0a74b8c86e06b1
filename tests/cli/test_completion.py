"""Tab completion: the candidates for sample prefixes, the query path's imports, the bash script run in a real bash
(zsh only by its text when zsh is not installed), and `rlpipe completion install`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlpipe.cli.completion import SUBCOMMANDS, candidates, main, script
from rlpipe.cli.verbs import VERBS, entry
from rlpipe.config.keys import group_options
from rlpipe.config.load import CONF_DIR

MODELS = group_options((CONF_DIR,), "model")
QWEN = [f"model={m}" for m in MODELS if m.startswith("qw")]
BASH_WORDBREAKS = "\"'><=;|&(: \t\n"  # bash's default COMP_WORDBREAKS


@pytest.mark.parametrize(
    ("words", "current", "expected"),
    [
        ([], "", sorted(VERBS)),
        ([], "roll", ["rollout."]),  # no verb starts so: `rlpipe key=value` trains
        (["train"], "rollout.n_s", ["rollout.n_samples="]),
        (["train"], "roll", ["rollout."]),  # conf/rollout/ has one option: nothing to pick with rollout=
        (["train"], "algo.advantage_estimator=g", ["algo.advantage_estimator=grpo", "algo.advantage_estimator=gspo"]),
        (["train"], "cluster.colocate=", ["cluster.colocate=false", "cluster.colocate=true"]),
        (["train"], "resume=", ["resume=false", "resume=force", "resume=true"]),  # bool | Literal['force']
        (["train"], "cluster.gpu=h", ["cluster.gpu=h100", "cluster.gpu=h200"]),
        (["train"], "cluster.gpu=n", ["cluster.gpu=null"]),  # Optional
        (["train"], "rollout.n_samples=", []),  # a number: nothing to offer
        (["train", "--cfg"], "", ["job"]),
        (["train", "--info"], "searchp", ["searchpath"]),
        (["train"], "--plan=", ["--plan=json", "--plan=md"]),
        (["train"], "--in", ["--info"]),
        (["plan"], "--j", ["--json"]),
        (["--cfg"], "", ["job"]),  # a flag first means train
        (["train"], "+experiment=gl", ["+experiment=glm4-9b-dapo"]),
        (["train"], "~rollout.n_s", ["~rollout.n_samples"]),
        (["convert"], "", ["hf-to-torch-dist", "torch-dist-to-hf"]),
        (["launcher"], "", ["k8s", "slurm"]),
        (["completion"], "", ["bash", "install", "zsh"]),
        (["completion", "install"], "z", ["zsh"]),
        (["import"], "", []),  # a file: the shells fall back to file names
    ],
)
def test_candidates(words: list[str], current: str, expected: list[str]) -> None:
    assert candidates(words, current) == expected


def test_group_and_option_candidates() -> None:
    assert "model=" in candidates(["train"], "mod")
    assert "+experiment=" in candidates(["train"], "+exp")
    assert "qwen3-4B" in MODELS
    assert candidates(["train"], "model=qw") == QWEN
    assert candidates(["launcher", "slurm"], "model=qw") == QWEN  # the launcher takes the run's overrides
    assert candidates(["train", "--help"], "rollo") == ["rollout", "rollout."]  # --help GROUP, or an override


def test_first_word_offers_flags_only_for_a_dash() -> None:
    assert "--cfg" in candidates([], "-")
    assert not [w for w in candidates([], "") if w.startswith("-")]


def test_config_dir_options_complete(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "qwmine.yaml").write_text("{}\n")
    assert candidates(["train", "--config-dir", str(tmp_path)], "model=qw") == sorted([*QWEN, "model=qwmine"])
    assert candidates(["train", f"--config-dir={tmp_path}"], "model=qwm") == ["model=qwmine"]


@pytest.mark.parametrize("verb", ["convert", "launcher"])
def test_subcommands_match_the_verbs_parsers(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        entry([verb, "--help"])
    assert "{" + ",".join(SUBCOMMANDS[verb]) + "}" in capsys.readouterr().out


def test_query_imports_no_heavy_package() -> None:
    """A query runs per TAB: `python -m rlpipe completion query` must not import Hydra, torch, Ray or Megatron."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['rlpipe', 'completion', 'query', 'zsh', '--', 'train', 'model=qw']\n"
        "try:\n    runpy.run_module('rlpipe', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "heavy = ('hydra', 'omegaconf', 'torch', 'ray', 'megatron', 'transformers')\n"
        "print('heavy:', sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [*QWEN, "heavy: []"]


def test_query_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "bash", "qw", "rlpipe train model=qw"], "rlpipe completion") == 0
    assert capsys.readouterr().out.splitlines() == [q.removeprefix("model=") + " " for q in QWEN]
    assert main(["query", "zsh", "--", "train", "rollout.n_s"], "rlpipe completion") == 0
    assert capsys.readouterr().out == "rollout.n_samples=\n"
    assert main(["query", "fish", "x"], "rlpipe completion") == 2


@pytest.fixture
def shim(tmp_path: Path) -> dict[str, str]:
    """The environment of a shell whose `rlpipe` is this Python's `python -m rlpipe`, run outside the checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rlpipe = bin_dir / "rlpipe"
    rlpipe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rlpipe "$@"\n')
    rlpipe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}


def _bash_complete(line: str, env: dict[str, str], cwd: Path, script_file: Path) -> list[str]:
    """COMPREPLY of the bash script for `line`, called as readline would: COMP_* set, $1 the command, $2 the text
    after the last word break, $3 the word before it."""
    comp_words = [w for w in re.split(r"(\s+|[=:])", line) if w.strip()]  # bash's split: `=` and `:` are words
    if line[-1].isspace():
        comp_words.append("")
    text = re.split(f"[{re.escape(BASH_WORDBREAKS)}]", line)[-1]
    quoted = " ".join(f"'{w}'" for w in comp_words)
    program = (
        f"source '{script_file}'\n"
        f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({quoted}); COMP_CWORD={len(comp_words) - 1}\n"
        f"_rlpipe_complete rlpipe '{text}' '{comp_words[-2]}'\n"
        'for reply in "${COMPREPLY[@]}"; do printf "<%s>\\n" "$reply"; done\n'
    )
    run = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return re.findall(r"<(.*)>", run.stdout)


def test_bash_script(tmp_path: Path, shim: dict[str, str]) -> None:
    script_file = tmp_path / "completion.bash"
    script_file.write_text(script("bash"))
    check = subprocess.run(
        ["bash", "-c", f"source '{script_file}'; complete -p rlpipe"], capture_output=True, text=True
    )
    assert "-o nospace" in check.stdout and "-F _rlpipe_complete" in check.stdout

    def complete(line: str) -> list[str]:
        return _bash_complete(line, shim, tmp_path, script_file)

    assert complete("rlpipe train model=qw") == [q.removeprefix("model=") + " " for q in QWEN]  # after the `=` break
    assert complete("rlpipe train rollout.n_s") == ["rollout.n_samples="]  # no space: the value follows
    assert complete("rlpipe tr") == ["train "]
    assert complete("rlpipe train model=") == [f"{m} " for m in MODELS]
    assert complete("rlpipe import ") == []  # bash falls back to file names (complete -o default)


def test_zsh_script_text() -> None:
    """zsh is not on every machine: the script registers with compdef after loading compinit, asks the query with
    the words after the command and the current prefix, and adds unfinished words without a suffix."""
    text = script("zsh")
    assert "compdef _rlpipe rlpipe" in text
    assert text.index("autoload -Uz compinit") < text.index("compdef _rlpipe")
    assert 'completion query zsh -- "${query[@]}"' in text
    assert "compadd -S '' -- ${(M)reply:#*[=.]}" in text


def test_print_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry(["completion", "bash"]) == 0
    assert capsys.readouterr().out == script("bash")
    assert entry(["--shell-completion", "install=zsh"]) == 0  # the training flag prints the same script
    assert capsys.readouterr().out == script("zsh")
    with pytest.raises(ValueError, match="fish"):
        script("fish")


@pytest.mark.parametrize(("shell", "rc"), [("bash", ".bashrc"), ("zsh", ".zshrc")])
def test_install_once(
    shell: str, rc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("SHELL", f"/bin/{shell}")
    monkeypatch.delenv("ZDOTDIR", raising=False)
    (tmp_path / rc).write_text("export EDITOR=vi")  # no final newline: the source line still gets its own
    assert entry(["completion", "install"]) == 0
    target = tmp_path / "data" / "rlpipe" / f"completion.{shell}"
    assert target.read_text() == script(shell)
    out = capsys.readouterr().out
    assert str(target) in out and f"source {tmp_path / rc}" in out
    assert entry(["completion", "install", shell]) == 0
    assert "already sources it" in capsys.readouterr().out
    lines = (tmp_path / rc).read_text().splitlines()
    assert len(lines) == 2 and lines[0] == "export EDITOR=vi" and str(target) in lines[1]


def test_installed_bashrc_registers(tmp_path: Path, shim: dict[str, str]) -> None:
    env = {**shim, "XDG_DATA_HOME": str(tmp_path / "data")}
    run = subprocess.run(
        ["rlpipe", "completion", "install", "bash"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    check = subprocess.run(
        ["bash", "-c", "source ~/.bashrc; complete -p rlpipe"], env=env, capture_output=True, text=True
    )
    assert "_rlpipe_complete" in check.stdout, check.stderr


def test_install_unknown_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SHELL", "/usr/bin/fish")
    assert entry(["completion", "install"]) == 2
    assert "$SHELL is `/usr/bin/fish`: only bash and zsh" in capsys.readouterr().err
    assert entry(["completion", "install", "tcsh"]) == 2
    assert "`tcsh`" in capsys.readouterr().err
    assert entry(["completion", "fish"]) == 2
    assert list(tmp_path.iterdir()) == []  # nothing written
