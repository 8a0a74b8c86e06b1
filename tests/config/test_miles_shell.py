"""The importer's shell model against bash itself: each word, and each whole script's train line, must expand to
exactly what bash passes (bash runs here with `python3` stubbed to print its arguments)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from rlpipe.config.miles import import_miles
from rlpipe.config.miles.expansion import ExpansionError, Variables, expand_words
from rlpipe.config.miles.importer import MissingSources, UnsetVariables
from rlpipe.config.miles.shell import BashSyntaxError, Script

CONF = Path(__file__).resolve().parents[2] / "conf"

# (statements run first, the word) — the constructs launch scripts use, the findings among them.
WORDS = [
    ("A=1", "$A"),
    ("A='x y'", "$A"),
    ("A='x y'", '"$A"'),
    ("", "${B:-def}"),
    ("B=", "${B:-def}"),
    ("B=", "${B-def}"),
    ("C=/data", '${A:-"${C}/x"}'),  # a nested default (crashed the old lexer)
    ("", '"${A:-"${C:-/d}/x y"}"'),
    ("", "$(seq 16 8 40)"),  # $(seq ...) as several words (kept as text before)
    ("", '"$(seq 1 3)"'),
    ("N=4", "$((N*2+1))"),  # arithmetic (kept as text before)
    ("N=7", "$((N/2))"),
    ("N=-7", "$((N/2))"),
    ("N=-7", "$((N%2))"),
    ("N=3", "$(( N > 2 ? 10 : 20 ))"),
    ("ARR=(a 'b c' d)", '"${ARR[@]}"'),
    ("ARR=(a 'b c' d)", "${ARR[@]}"),
    ("ARR=(a 'b c' d)", "${#ARR[@]}"),  # an array's length (kept as text before)
    ("ARR=(a 'b c' d)", "${ARR[1]}"),
    ("A=(1 2); A+=(3)", '"${A[@]}"'),
    ("P=/a/b/c.sh", "${P##*/}"),
    ("P=/a/b/c.sh", "${P%/*}"),
    ("P=/a/b/c.sh", "${P%.sh}"),
    ("P=a-b-c", "${P//-/_}"),
    ("P=a-b-c", "${P/-/_}"),
    ("A=abc", "${#A}"),
    ("X=5", "--x=${X}0"),
    ("X=hi", "${X:+yes}"),
    ("", "x${X:+yes}y"),
    ("X=a; X+=b", "$X"),
    ("printf -v P '%s_%d' ab 3", "$P"),  # printf -v (kept as text before)
    ("", "$(printf '%03d' 7)"),
    ("", "$(printf '%s-' a b c)"),
    ("", "$(echo a b)"),
    ("", '"$(echo a  b)"'),
    ("N=2; M=$((N*8))", "$M"),
    ("A=$(seq 1 3)", '"$A"'),
    ("", "''"),
    ("", '""'),
    ("A=", '"$A"'),
    ("A=", "$A"),
    ("", '"$@"'),
    ('MODE=a; if [ "$MODE" = a ]; then X=1; else X=2; fi', "$X"),
    ('MODE=b; if [ "$MODE" = a ]; then X=1; elif [ -n "$MODE" ]; then X=3; fi', "$X"),
    ("N=0; if [ $N -gt 0 ]; then X=yes; else X=no; fi", "$X"),
    ("L=(); for m in 1 2; do L+=(--m$m); done", '"${L[@]}"'),
    ('D=$(cd -- "$(dirname -- /tmp/run.sh)" &>/dev/null && pwd)', "$D"),
]


def bash_words(setup: str, word: str) -> list[str]:
    """The words bash passes to a command for `word`, after running `setup`."""
    show = 'f() { for a in "$@"; do printf "%s\\0" "$a"; done; }'
    done = subprocess.run(["bash", "-c", f"{setup}\n{show}\nf {word}"], capture_output=True, text=True, check=True)
    return done.stdout.split("\0")[:-1]


def rlpipe_words(setup: str, word: str) -> list[str]:
    script = Script(None, CONF)
    script.read(setup)
    return expand_words(word, script.variables)


@pytest.mark.parametrize(("setup", "word"), WORDS, ids=[f"{s} | {w}" for s, w in WORDS])
def test_word_expands_as_bash_does(setup: str, word: str) -> None:
    assert rlpipe_words(setup, word) == bash_words(setup, word)


def test_a_command_rlpipe_does_not_run_is_an_error_naming_it() -> None:
    with pytest.raises(ExpansionError, match=r"nvidia-smi"):
        expand_words("$(nvidia-smi --query-gpu=name)", Variables())


STUB = 'python3() { for a in "$@"; do printf \'%s\\0\' "$a"; done; }\n'

SCRIPT = """
set -ex
SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" &>/dev/null && pwd)"
BASE=${BASE_DIR:-"${HOME_DIR:-/root}/models"}
NUM_GPUS=${NUM_GPUS:-8}
ENGINE_GPUS=$((NUM_GPUS / 4))
printf -v RUN_NAME '%s-%02d' dapo 7
CUDA_GRAPH_BS=($(seq 16 8 40))
MODEL_ARGS=(--num-layers 2 --hidden-size 64)
if [ "$NUM_GPUS" -ge 8 ]; then
   PERF_ARGS=(--tensor-model-parallel-size 2 --sequence-parallel)
else
   PERF_ARGS=(--tensor-model-parallel-size 1)
fi
for extra in --use-dynamic-batch-size; do PERF_ARGS+=("$extra"); done
python3 train.py \\
   --actor-num-gpus-per-node ${NUM_GPUS} --rollout-num-gpus-per-engine ${ENGINE_GPUS} \\
   --hf-checkpoint "${BASE}/Qwen3-4B" --wandb-group "$RUN_NAME" \\
   --sglang-cuda-graph-bs ${CUDA_GRAPH_BS[@]} --num-steps ${#CUDA_GRAPH_BS[@]} \\
   "${MODEL_ARGS[@]}" "${PERF_ARGS[@]}"
"""


def test_a_whole_script_gives_the_train_line_bash_gives(tmp_path: Path) -> None:
    path = tmp_path / "run-x.sh"
    path.write_text(SCRIPT)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-c", STUB + f"source {path}"], capture_output=True, text=True, env=env)
    expected = done.stdout.split("\0")[:-1]
    script = Script(tmp_path, CONF, script_path=path)
    script.read(SCRIPT)
    assert script.train is not None and script.missing == {}
    assert ["train.py", *script.train[1]] == expected
    assert "--sglang-cuda-graph-bs" in expected and "/root/models/Qwen3-4B" in expected  # what it is about


def test_variables_given_from_outside_fill_defaults_not_assignments(tmp_path: Path) -> None:
    script = Script(tmp_path, CONF, {"NUM_GPUS": "4", "BASE_DIR": "/data"}, tmp_path / "run-x.sh")
    script.read(SCRIPT)
    assert script.train is not None
    flags = script.train[1]
    assert flags[flags.index("--actor-num-gpus-per-node") + 1] == "4"  # ${NUM_GPUS:-8} took the given value
    assert flags[flags.index("--hf-checkpoint") + 1] == "/data/Qwen3-4B"
    assert flags[flags.index("--tensor-model-parallel-size") + 1] == "1"  # the else branch, as bash would take


def test_a_train_line_with_a_variable_nobody_gave_is_refused_listing_it() -> None:
    with pytest.raises(UnsetVariables) as info:
        import_miles('python3 train.py --hf-checkpoint "$MODEL_DIR/x" --load ${CKPT}\n', base_dir=None)
    assert info.value.missing == {"MODEL_DIR": "${MODEL_DIR}/x", "CKPT": "${CKPT}"}
    assert "--set MODEL_DIR=... --set CKPT=..." in str(info.value)


def test_read_ra_of_a_here_string_splits_as_bash_does(tmp_path: Path) -> None:
    text = (
        'LINE="--num-layers 4  --hidden-size \'8\'"\nread -ra MODEL_ARGS <<< "${LINE}"\n'
        "python3 train.py ${MODEL_ARGS[@]} --x 1\n"
    )
    done = subprocess.run(["bash", "-c", STUB + text], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    script = Script(tmp_path, CONF)
    script.read(text)
    assert script.train is not None and ["train.py", *script.train[1]] == done.stdout.split("\0")[:-1]
    assert script.train[1] == ["--num-layers", "4", "--hidden-size", "'8'", "--x", "1"]


HELPER_SCRIPT = """
MODEL_ARGS_LINE="$(python3 "${SCRIPT_DIR}/miles/utils/external_utils/model_args_utils.py" "qwen3-4B")" || exit 1
read -ra MODEL_ARGS <<< "${MODEL_ARGS_LINE}"
python3 train.py ${MODEL_ARGS[@]} --hf-checkpoint /root/Qwen3-4B
"""


def test_model_flags_a_helper_prints_are_asked_for_naming_the_command() -> None:
    with pytest.raises(UnsetVariables) as info:
        import_miles(HELPER_SCRIPT, base_dir=None)
    assert list(info.value.missing) == ["MODEL_ARGS_LINE"]
    assert "model_args_utils.py" in info.value.printed_by["MODEL_ARGS_LINE"]
    assert "the output of" in str(info.value) and "--set MODEL_ARGS_LINE=..." in str(info.value)
    given = {"MODEL_ARGS_LINE": "--num-layers 36 --hidden-size 2560"}
    result = import_miles(HELPER_SCRIPT, base_dir=None, variables=given)
    assert result.config["model"]["num_layers"] == 36 and result.config["model"]["hidden_size"] == 2560


def test_a_sourced_models_file_missing_here_is_asked_for_then_found_by_name(tmp_path: Path) -> None:
    text = 'source "/root/slime/scripts/models/my-model.sh"\npython3 train.py ${MODEL_ARGS[@]}\n'
    with pytest.raises(MissingSources) as info:
        import_miles(text, base_dir=tmp_path)
    assert info.value.sources == ["/root/slime/scripts/models/my-model.sh"] and "--source-dir" in str(info.value)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "my-model.sh").write_text("MODEL_ARGS=(--num-layers 3)\n")
    result = import_miles(text, base_dir=tmp_path, source_dirs=(tmp_path / "models",))
    assert result.config["model"]["num_layers"] == 3


def test_a_flat_argv_imports_as_a_script_does() -> None:
    """Miles' Python launchers print the final `ray job submit ... -- python3 train.py <flags>`."""
    argv = (
        "ray job submit --address=http://127.0.0.1:8265 --runtime-env-json='{\"env_vars\": {}}' -- "
        "python3 train.py --rollout-batch-size 32 --n-samples-per-prompt 8 --global-batch-size 256 --lr 1e-6\n"
    )
    result = import_miles(argv, base_dir=None)
    assert result.config["rollout"]["batch_size"] == 32 and result.config["optim"]["lr"] == 1e-6
    flags_only = import_miles("--rollout-batch-size 32 --n-samples-per-prompt 8\n", base_dir=None)
    assert flags_only.config["rollout"]["n_samples"] == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [('A=1\nB="abc\n', "unclosed double quote from line 2"), ("A=$(seq 1\n", "unclosed `(` from line 1")],
)
def test_an_unclosed_quote_or_substitution_names_its_line(text: str, message: str) -> None:
    with pytest.raises(BashSyntaxError, match=re.escape(message)):
        Script(None, CONF).read(text)
