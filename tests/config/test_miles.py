"""Miles interop: export against the seed page's GLM4-9B recipe, import of a Miles-style script, round trips.

The expected flags are copied by hand from the seed page (the Miles docs' run-glm4-9B.sh arrays) and from Miles'
scripts/models/glm4-9B.sh (tests/config/fixtures/models/glm4-9B.sh). Real bash is the independent reader: it
checks that the exported text holds exactly the words `miles_arrays` meant, and what the fixtures hold.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from miles_helpers import load_imported, same_run

from rlpipe.config import Resolved, load
from rlpipe.config.miles import (
    ImportResult,
    export_miles,
    import_miles,
    main,
    miles_arrays,
    miles_cluster_args,
    to_experiment_yaml,
)

FIXTURES = Path(__file__).parent / "fixtures"
GLM4_ENV = {"WANDB_KEY": "wandb-test-key"}  # the one variable run-glm4-9B.sh expects from its environment


def words(text: str) -> list[str]:
    return text.split()


# The seed page, array by array (scripts/run-glm4-9B.sh as the Miles docs show it).
SEED: dict[str, list[str]] = {
    "CKPT_ARGS": words(
        "--hf-checkpoint /root/GLM-Z1-9B-0414 --ref-load /root/GLM-Z1-9B-0414_torch_dist "
        "--load /root/GLM-Z1-9B-0414_miles/ --save /root/GLM-Z1-9B-0414_miles/ --save-interval 20"
    ),
    "ROLLOUT_ARGS": words(
        "--prompt-data /root/dapo-math-17k/dapo-math-17k.jsonl --input-key prompt --label-key label "
        "--apply-chat-template --rollout-shuffle --rm-type deepscaler --num-rollout 3000 --rollout-batch-size 16 "
        "--n-samples-per-prompt 8 --num-steps-per-rollout 1 --global-batch-size 128 --rollout-max-response-len 8192 "
        "--rollout-temperature 1 --balance-data"
    ),
    "EVAL_ARGS": words(
        "--eval-interval 5 --eval-prompt-data aime /root/aime-2024/aime-2024.jsonl "
        "--n-samples-per-eval-prompt 16 --eval-max-response-len 16384 --eval-top-p 1"
    ),
    "PERF_ARGS": words(
        "--tensor-model-parallel-size 2 --sequence-parallel --pipeline-model-parallel-size 1 "
        "--context-parallel-size 2 --expert-model-parallel-size 1 --expert-tensor-parallel-size 1 "
        "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1 --use-dynamic-batch-size "
        "--max-tokens-per-gpu 4608"
    ),
    "GRPO_ARGS": words(
        "--advantage-estimator grpo --use-kl-loss --kl-loss-coef 0.00 --kl-loss-type low_var_kl "
        "--entropy-coef 0.00 --eps-clip 0.2 --eps-clip-high 0.28"
    ),
    "OPTIMIZER_ARGS": words(
        "--optimizer adam --lr 1e-6 --lr-decay-style constant --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.98"
    ),
    "SGLANG_ARGS": words("--rollout-num-gpus-per-engine 2"),
    # Miles' run-glm4-9B.sh MISC_ARGS: Megatron's dropout default is 0.1
    "MISC_ARGS": words("--attention-dropout 0.0 --hidden-dropout 0.0"),
}
# Miles' scripts/models/glm4-9B.sh, without its --spec line (a Megatron plugin rlpipe has no field for).
GLM4_MODEL_ARGS = words(
    "--swiglu --num-layers 40 --hidden-size 4096 --ffn-hidden-size 13696 --num-attention-heads 32 "
    "--group-query-attention --num-query-groups 2 --use-rotary-position-embeddings --disable-bias-linear "
    "--add-qkv-bias --normalization RMSNorm --norm-epsilon 1e-5 --rotary-base 10000 --vocab-size 151552 "
    "--post-self-attn-layernorm --post-mlp-layernorm --rotary-interleaved --rotary-percent 0.5 --no-rope-fusion "
    "--untie-embeddings-and-output-weights"
)
GLM4_SPEC = ["--spec", "miles_plugins.models.glm4", "get_glm_spec"]
FIXTURE_UNMAPPED = {
    ("--spec", "megatron"),
    ("--wandb-key", "miles"),
    ("--accumulate-allreduce-grads-in-fp32", "megatron"),
    ("--attention-softmax-in-fp32", "megatron"),
    ("--attention-backend", "megatron"),
}


def _value(word: str) -> Any:
    try:
        return float(word)  # 0.00 == 0, 1e-6 == 1e-06
    except ValueError:
        return word


def flag_set(words: list[str]) -> set[tuple[str, tuple[Any, ...]]]:
    """(flag, its values) pairs, numbers compared as numbers; fails on a repeated flag."""
    pairs: list[tuple[str, list[str]]] = []
    for word in words:
        if word.startswith("--"):
            pairs.append((word, []))
        else:
            pairs[-1][1].append(word)
    flags = [flag for flag, _ in pairs]
    assert len(flags) == len(set(flags)), f"repeated flags in {words}"
    return {(flag, tuple(map(_value, values))) for flag, values in pairs}


def bash_words(script: str, expr: str) -> list[str]:
    """What bash holds after running `script`, then `printf '%s\\n' expr` (one word per line)."""
    out = subprocess.run(
        ["bash", "-c", f"{script}\nprintf '%s\\n' {expr}"], capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()


@pytest.fixture(scope="module")
def glm4() -> Resolved:
    return load(["experiment=glm4-9b-dapo"], check_paths=False)


# -------------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("array", sorted(SEED))
def test_glm4_recipe_exports_the_seed_flags(glm4: Resolved, array: str) -> None:
    assert flag_set(miles_arrays(glm4)[array]) == flag_set(SEED[array])


def test_glm4_model_args_are_miles_models_file(glm4: Resolved) -> None:
    assert flag_set(miles_arrays(glm4)["MODEL_ARGS"]) == flag_set(GLM4_MODEL_ARGS)
    # and the fixture is that file: bash reads it as these words, --spec included
    words = bash_words(f"source {FIXTURES / 'models' / 'glm4-9B.sh'}", '"${MODEL_ARGS[@]}"')
    assert flag_set(words) == flag_set([*GLM4_SPEC, *GLM4_MODEL_ARGS])


def test_glm4_cluster_flags_and_script(glm4: Resolved) -> None:
    assert miles_cluster_args(glm4) == [
        "--actor-num-nodes",
        "1",
        "--actor-num-gpus-per-node",
        "4",
        "--rollout-num-gpus",
        "4",
    ]
    text = export_miles(glm4)
    assert "python3 train.py" in text and "WANDB_ARGS" not in text  # logging is off in this recipe
    assert "# Not expressed" not in text  # nothing rlpipe-only differs from what Miles does


def test_exported_text_is_what_bash_reads(tmp_path: Path) -> None:
    """bash runs the script with python3 stubbed to print its arguments: exactly the arrays, in order."""
    run = load(
        ["experiment=colocate", "ckpt.save='/tmp/my run/'", "log.wandb=true", 'log.wandb_project="it\'s"'],
        check_paths=False,
    )
    text = export_miles(run)
    got = bash_words("python3() { printf '%s\\n' \"$@\"; }\n" + text, "")
    arrays = miles_arrays(run)
    want = ["train.py", *miles_cluster_args(run), *(w for name in arrays for w in arrays[name])]
    assert got[:-1] == want  # the trailing empty printf line
    assert "--save" in want and "/tmp/my run/" in want and "it's" in want
    assert "--colocate" in want and "--rollout-num-gpus" not in want  # Miles ignores it under colocate


def test_colocate_exports_its_derived_values() -> None:
    arrays = miles_arrays(load(["experiment=colocate"], check_paths=False))
    sglang = flag_set(arrays["SGLANG_ARGS"])
    assert ("--sglang-mem-fraction-static", (0.8,)) in sglang  # derived under colocate, spelled for Miles
    assert ("--sglang-cuda-graph-backend-prefill", ("disabled",)) in sglang
    assert "--bf16" not in arrays["PERF_ARGS"]  # Miles trains in bf16 whatever the flags say


def test_inverted_and_rlpipe_only_fields_are_spelled_or_noted() -> None:
    run = load(
        [
            "experiment=glm4-9b-dapo",
            "algo.grpo_std_normalization=false",
            "perf.bias_swiglu_fusion=false",
            "eval.before_train=false",
            "rollout.max_staleness=3",
            "+eval.datasets.aime.top_k=5",
            "cluster.colocate=true",
            "cluster.offload_train=false",
            "rollout.stop_token_ids=[7,9]",
        ],
        check_paths=False,
    )
    arrays, text = miles_arrays(run), export_miles(run)
    assert "--disable-grpo-std-normalization" in arrays["GRPO_ARGS"]
    assert "--no-bias-swiglu-fusion" in arrays["PERF_ARGS"]
    assert "--skip-eval-before-train" in arrays["EVAL_ARGS"]
    assert ("--rollout-stop-token-ids", (7.0, 9.0)) in flag_set(arrays["ROLLOUT_ARGS"])
    assert "--no-offload-train" in miles_cluster_args(run) and "--no-offload-rollout" not in miles_cluster_args(run)
    assert "#   rollout.max_staleness = 3: no Miles flag" in text
    assert "#   eval.datasets.aime.top_k = 5: Miles' flags give every eval dataset -1" in text


def test_async_uses_train_async() -> None:
    text = export_miles(load(["experiment=async"], check_paths=False))
    assert "python3 train_async.py" in text and "python3 train.py" not in text


# -------------------------------------------------------------------------------------------------- import
@pytest.fixture(scope="module")
def fixture_import() -> ImportResult:
    return import_miles((FIXTURES / "run-glm4-9B.sh").read_text(), base_dir=FIXTURES, variables=GLM4_ENV)


def test_import_of_a_miles_script_reads_every_array(fixture_import: ImportResult) -> None:
    cfg = fixture_import.config
    assert cfg["defaults"] == [{"override /model": "glm4-9B"}]
    assert cfg["ckpt"]["hf_checkpoint"] == "/root/GLM-Z1-9B-0414"  # ${BASE_DIR} expanded, trailing comment dropped
    assert cfg["ckpt"]["save"] == "/root/GLM-Z1-9B-0414_miles/"  # quoted
    assert cfg["rollout"]["num_steps_per_rollout"] == 1  # from ROLLOUT_ARGS+=
    assert cfg["rollout"]["temperature"] == 1.0 and cfg["rollout"]["engine"] == "sglang"
    assert "micro_batch_size" not in cfg["perf"]  # commented out in the script
    assert cfg["eval"]["datasets"] == {"aime": {"path": "/root/aime-2024/aime-2024.jsonl"}}
    assert cfg["model"]["num_query_groups"] == 2 and cfg["model"]["kv_channels"] == 128  # Megatron's derivation
    assert cfg["model"]["add_bias_linear"] is False and cfg["model"]["attention_dropout"] == 0.0
    assert cfg["sglang"]["extra"] == {"cuda_graph_max_bs_decode": 256}
    assert cfg["log"] == {"wandb": True, "wandb_project": "miles-dev", "wandb_group": "glm4-9B-test",
                          "wandb_mode": "online"}  # fmt: skip
    assert cfg["cluster"] == {
        "actor_num_nodes": 1,
        "actor_num_gpus_per_node": 4,
        "rollout_num_gpus": 4,
        "backend": "ray",
        "accelerator": "cuda",
    }
    assert {(u.flag, u.kind) for u in fixture_import.unmapped} == FIXTURE_UNMAPPED
    assert {line.split(":")[0] for line in fixture_import.implied} == {
        "--group-query-attention",
        "--use-rotary-position-embeddings",
        "--no-rope-fusion",
    }


def test_imported_fixture_is_the_glm4_recipe(fixture_import: ImportResult, glm4: Resolved, tmp_path: Path) -> None:
    extra = {"sglang.extra": {"cuda_graph_max_bs_decode": 256}}
    same_run(load_imported(fixture_import, tmp_path), glm4, skip=("log",), differ=extra)


def test_missing_models_file_still_names_the_model_group(glm4: Resolved, tmp_path: Path) -> None:
    result = import_miles((FIXTURES / "run-glm4-9B.sh").read_text(), base_dir=None, variables=GLM4_ENV)
    assert result.model == "glm4-9B"
    assert result.config["model"] == {"attention_dropout": 0.0, "hidden_dropout": 0.0}  # the group has the rest
    assert ("--spec", "megatron") not in {(u.flag, u.kind) for u in result.unmapped}
    extra = {"sglang.extra": {"cuda_graph_max_bs_decode": 256}}
    same_run(load_imported(result, tmp_path), glm4, skip=("log",), differ=extra)


def test_unresolvable_source_unknown_and_invalid_flags_are_listed() -> None:
    script = """
source /nowhere/models/my-model.sh
A=( --rollout-batch-sise 4 --rollout-temperature -1 --normalization rmsnorm )  # typo, out of bounds, case
python3 train.py ${A[@]} --eval-config eval.yaml --sglang-log-level INFO
"""
    result = import_miles(script, base_dir=None)
    found = {(u.flag, u.kind): u.reason for u in result.unmapped}
    assert set(found) == {
        ("source", "unresolved"),
        ("--rollout-batch-sise", "unknown"),
        ("--rollout-temperature", "invalid"),
        ("--eval-config", "miles"),
    }
    assert "did you mean --rollout-batch-size?" in found[("--rollout-batch-sise", "unknown")]
    assert "greater than or equal to 0" in found[("--rollout-temperature", "invalid")]
    assert result.model == "auto"
    assert result.config["model"] == {"normalization": "RMSNorm", "attention_dropout": 0.1, "hidden_dropout": 0.1}
    assert result.config["sglang"] == {"log_level": "info"}


def test_import_fills_miles_defaults_where_rlpipe_differs() -> None:
    result = import_miles("python3 train.py --rollout-batch-size 32 --global-batch-size 32\n", base_dir=None)
    cfg = result.config
    assert cfg["rollout"]["n_samples"] == 1  # Miles' --n-samples-per-prompt default, not rlpipe's 8
    assert cfg["rollout"]["num_steps_per_rollout"] is None  # derived from the other knobs
    assert cfg["rollout"]["input_key"] == "input" and cfg["rollout"]["label_key"] is None
    assert cfg["algo"] == {"kl_loss_type": "k1", "eps_clip_high": None}
    assert cfg["optim"] == {"lr_decay_style": "linear", "weight_decay": 0.01, "adam_beta2": 0.999}
    assert cfg["model"] == {"attention_dropout": 0.1, "hidden_dropout": 0.1}  # Megatron's dropout
    assert cfg["perf"]["bias_swiglu_fusion"] is True  # Megatron fuses SwiGLU unless told not to
    assert "log" not in cfg  # wandb off: its settings are left alone


@pytest.mark.parametrize("experiment", ["glm4-9b-dapo", "colocate", "async", "qwen3-4b-fp8", "dynamic-sampling"])
def test_round_trip(experiment: str, tmp_path: Path) -> None:
    run = load([f"experiment={experiment}"], check_paths=False)
    result = import_miles(export_miles(run), base_dir=None)
    assert result.unmapped == [] and result.notes == []
    same_run(load_imported(result, tmp_path), run)


def test_cli_import_writes_yaml_and_lists_unmapped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "glm4-imported.yaml"
    assert main(["import", str(FIXTURES / "run-glm4-9B.sh"), "-o", str(out), "--set", "WANDB_KEY=k"]) == 0
    err = capsys.readouterr().err
    assert "5 flag(s) not applied" in err and "--spec miles_plugins.models.glm4 get_glm_spec" in err
    text = out.read_text()
    assert text.startswith("# @package _global_\n") and "run_name: glm4-imported" in text


def test_a_variable_with_no_value_is_asked_for_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_KEY", raising=False)
    out = tmp_path / "glm4-imported.yaml"
    assert main(["import", str(FIXTURES / "run-glm4-9B.sh"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "WANDB_KEY (in ${WANDB_KEY})" in err and "--set WANDB_KEY=..." in err
    assert not out.exists()


def test_cli_export_is_launch_miles(capsys: pytest.CaptureFixture[str], glm4: Resolved) -> None:
    assert main(["export", "+experiment=glm4-9b-dapo"]) == 0
    assert capsys.readouterr().out == export_miles(glm4) + "\n"


def test_import_is_light() -> None:
    """The module serves `--miles` and config checks: importing it must not pull in torch, Ray or SGLang."""
    code = (
        "import sys, rlpipe.config.miles; print(sorted({'torch', 'ray', 'sglang', 'megatron.core'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_secret_flag_values_are_never_written_out() -> None:
    from rlpipe.config.miles import import_miles

    script = "python3 train.py --wandb-key sk-live-1234 --use-wandb --rollout-batch-size 4\n"
    result = import_miles(script, base_dir=None)
    text = to_experiment_yaml(result, "x") + "\n".join(map(str, result.unmapped))
    assert "--wandb-key" in text and "sk-live-1234" not in text and "<redacted>" in text


def test_miles_multi_turn_flags_import_to_max_turns_and_name_rollout_env() -> None:
    """Miles' retool multi-turn launcher (examples/retool_v2): the turn budget maps; the generate hub and its tool
    plug-ins are named with rlpipe's way to do the same (an environment), not dropped silently."""
    script = (
        "python3 train.py --custom-generate-function-path miles.rollout.generate_hub.multi_turn.generate "
        "--generate-tool-specs-path examples.retool_v2.tool_sandbox.tool_specs --generate-tool-call-parser qwen25 "
        "--generate-max-turns 4 --log-multi-turn\n"
    )
    result = import_miles(script, base_dir=None)
    assert result.config["rollout"]["max_turns"] == 4
    found = {u.flag: u.reason for u in result.unmapped}
    for flag in ("--custom-generate-function-path", "--generate-tool-specs-path", "--generate-tool-call-parser"):
        assert "rollout.env" in found[flag]
    assert "env/*" in found["--log-multi-turn"]
