"""`--miles` export against hostile strings: bash must see exactly the intended argv and run nothing injected.

Every string a config can hold (paths, run and dataset names, sglang.extra values of every shape) is filled with
shell payloads; bash then runs the exported script with `python3` stubbed to print its argv NUL-separated, in a
folder whose files a stray glob would match. The argv must equal `miles_arrays` word for word, and no payload's
marker file may exist afterwards. Secrets are written as environment-variable references that bash fills in.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rlpipe.config import Resolved
from rlpipe.config.load import compose, validate
from rlpipe.config.miles import export_miles, import_miles, miles_arrays, miles_cluster_args
from rlpipe.config.resolve import resolve

STUB = "python3() { printf '%s\\0' \"$@\"; }\n"  # NUL-separated: values may hold newlines


def payloads(marker: Path) -> list[str]:
    """Strings that run `touch marker/<n>` if bash ever evaluates them, plus quoting edge cases."""
    t = [f"{marker}/{n}" for n in range(10)]
    return [
        f"$(touch {t[0]})",
        f"`touch {t[1]}`",
        f"x; touch {t[2]}",
        f"x && touch {t[3]}",
        f"x\ntouch {t[4]}",
        f"' ; touch {t[5]} ; '",
        f'" ; touch {t[6]} ; "',
        f"$(touch {t[7]})'\"$(touch {t[8]})",
        f"x | touch {t[9]}",
        "*",
        "*.txt",
        "--leading-dash",
        "-rf",
        "naïve 数据 ✓ \u00a0",
        "$HOME ${PATH} \\ \\n %s",
        "a b\tc  d",
        "~root !! #not-a-comment",
    ]


def hostile_run(marker: Path, secret: str | None = None) -> Resolved:
    """The GLM4 recipe with a payload in every free-form string the export writes."""
    p = payloads(marker)
    raw = compose(["experiment=glm4-9b-dapo", "log.wandb=true"])
    # only in a comment; a run name holds no path separator or newline (a config rule), the rest is fair game
    raw["run_name"] = "x $(true) `true` ; && | * !! # naïve"
    raw["rollout"]["prompt_data"] = p[0]
    raw["rollout"]["input_key"] = p[5]
    raw["ckpt"]["save"] = f"/tmp/{p[2]}/"
    raw["ckpt"]["load"] = p[7]
    raw["log"]["wandb_project"] = p[6]
    raw["log"]["wandb_group"] = p[13]
    raw["eval"]["datasets"] = {
        p[4]: {"path": p[1], "top_k": 3},  # a differing top_k puts the name in a comment note too
        p[9]: {"path": p[10]},
        p[11]: {"path": p[3]},
    }
    extra: dict[str, Any] = {
        "served_model_name": p[8],
        "chat_template": p[11],
        "reasoning_parser": p[9],
        "tool_call_parser": p[13],
        "lora_paths": [p[12], p[14], p[15], p[16], p[0]],
        "json_model_override_args": {"a": p[0], "b": [p[5], p[6]], p[1]: p[4]},
    }
    if secret is not None:
        extra["api_key"] = secret
    raw["sglang"]["extra"] = extra
    return resolve(validate(raw), check_paths=False)


def bash_argv(script: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """bash runs the script with python3 stubbed; `env` adds variables to a minimal environment."""
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    return subprocess.run(["bash", "-c", STUB + script], cwd=cwd, env={**base, **(env or {})}, capture_output=True)


def intended(run: Resolved) -> list[str]:
    arrays = miles_arrays(run)
    return ["train.py", *miles_cluster_args(run), *(w for name in arrays for w in arrays[name])]


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A folder for payload marker files, inside a working folder with files a stray glob would match."""
    for name in ("a.txt", "b.txt", "c"):
        (tmp_path / name).write_text("")
    (tmp_path / "marker").mkdir()
    return tmp_path / "marker"


def test_bash_sees_exactly_the_intended_words(marker: Path) -> None:
    run = hostile_run(marker)
    proc = bash_argv(export_miles(run), marker.parent)
    assert proc.returncode == 0, proc.stderr.decode()
    got = proc.stdout.decode().split("\0")[:-1]
    assert got == intended(run)
    assert list(marker.iterdir()) == []  # no payload ran
    for value in payloads(marker):  # and each hostile string arrived whole
        assert value in got or any(value in word for word in got), value


def test_values_land_after_their_flags(marker: Path) -> None:
    run = hostile_run(marker)
    got = bash_argv(export_miles(run), marker.parent).stdout.decode().split("\0")[:-1]
    p = payloads(marker)
    assert got[got.index("--prompt-data") + 1] == p[0]
    assert got[got.index("--input-key") + 1] == p[5]
    assert got[got.index("--save") + 1] == f"/tmp/{p[2]}/"
    assert got[got.index("--sglang-chat-template") + 1] == "--leading-dash"
    assert got[got.index("--sglang-reasoning-parser") + 1] == "*"
    lora = got.index("--sglang-lora-paths")
    assert got[lora + 1 : lora + 6] == [p[12], p[14], p[15], p[16], p[0]]
    assert got[got.index("--sglang-json-model-override-args") + 1].startswith('{"a": "$(touch')  # JSON, as SGLang reads
    evals = got.index("--eval-prompt-data")
    assert got[evals + 1 : evals + 7] == [p[4], p[1], p[9], p[10], p[11], p[3]]


def test_comments_stay_comments(marker: Path) -> None:
    """A run name or dataset name with a newline is escaped in the header; every line outside the arrays and the
    train line is a comment or blank."""
    text = export_miles(hostile_run(marker))
    head = text.split("\nMODEL_ARGS=(")[0].splitlines()
    assert all(line.startswith("#") or not line for line in head), head
    assert any("x\\ntouch" in line for line in head)


def test_secret_becomes_a_required_variable(marker: Path) -> None:
    secret = f"--sk-{marker.name}-$(touch {marker}/s) 'q'"
    run = hostile_run(marker, secret=secret)
    text = export_miles(run)
    assert secret not in text and "sk-" not in text
    assert '--sglang-api-key "${RLPIPE_SECRET_SGLANG_API_KEY:?}"' in text
    proc = bash_argv(text, marker.parent, {"RLPIPE_SECRET_SGLANG_API_KEY": secret})
    assert proc.returncode == 0, proc.stderr.decode()
    got = proc.stdout.decode().split("\0")[:-1]
    assert got == intended(run) and got[got.index("--sglang-api-key") + 1] == secret
    unset = bash_argv(text, marker.parent)  # fails before train.py, naming the variable
    assert unset.returncode != 0 and unset.stdout == b"" and b"RLPIPE_SECRET_SGLANG_API_KEY" in unset.stderr
    assert list(marker.iterdir()) == []


def test_url_with_credentials_becomes_a_required_variable(marker: Path) -> None:
    raw = compose(["experiment=glm4-9b-dapo", "rollout.rm_type=remote"])
    url = "http://u:pa$$(touch x)@rm.example.com/score?token=t0k&x=1"
    raw["rollout"]["rm_url"] = url
    run = resolve(validate(raw), check_paths=False)
    text = export_miles(run)
    assert "pa$$" not in text and "t0k" not in text and "rm.example.com" in text
    got = bash_argv(text, marker.parent, {"RLPIPE_SECRET_RM_URL": url}).stdout.decode().split("\0")[:-1]
    assert got == intended(run) and got[got.index("--rm-url") + 1] == url


def test_import_reads_the_hostile_words_back(marker: Path) -> None:
    """The Miles import (its own bash reader) recovers the same strings from the exported script."""
    run = hostile_run(marker)
    cfg = import_miles(export_miles(run), base_dir=None).config
    p = payloads(marker)
    assert cfg["rollout"]["prompt_data"] == p[0] and cfg["rollout"]["input_key"] == p[5]
    assert cfg["ckpt"]["save"] == f"/tmp/{p[2]}/" and cfg["log"]["wandb_project"] == p[6]
    # (the third dataset is named `--leading-dash`: to a flag reader, Miles' argparse included, that is a flag)
    assert list(cfg["eval"]["datasets"].items())[:2] == [(p[4], {"path": p[1]}), (p[9], {"path": p[10]})]
    assert cfg["sglang"]["extra"]["served_model_name"] == p[8]
