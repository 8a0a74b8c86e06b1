"""The JSON schemas of the config YAMLs (rlpipe/schemas): current, valid, and as strict as the pydantic schema.

Every shipped YAML names its schema in a `# yaml-language-server: $schema=...` header and validates against it;
the schemas reject what pydantic rejects (unknown keys, wrong enum values, out-of-bounds numbers) and accept what
a partial Hydra file holds (any subset of keys, interpolations, `???`, a defaults list).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from rlpipe.config import load
from rlpipe.config.json_schema import DRAFT, EXPERIMENT, main, schema_dir, schemas, stale
from rlpipe.config.miles import import_miles, to_experiment_yaml
from rlpipe.config.schema import GROUPS, RolloutConfig, RunConfig

CONF = schema_dir().parent / "conf"
SHIPPED = sorted(CONF.rglob("*.yaml"))
HEADER = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
FIXTURES = Path(__file__).parent / "fixtures"
SCHEMAS = schemas()


def problems(name: str, doc: Any) -> list[str]:
    """What the schema file `name` says about the YAML document `doc` (empty: valid)."""
    return [error.message for error in Draft202012Validator(SCHEMAS[name]).iter_errors(doc)]


def header_schema(path: Path) -> Path | None:
    """The schema file the header comments of the YAML file `path` name, resolved as an editor resolves it."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if match := HEADER.match(line):
            return (path.parent / match.group(1)).resolve()
    return None


def expected_schema(path: Path) -> str:
    """The schema a shipped YAML should name: its group's, or the experiment schema (config.yaml, experiments)."""
    group = path.relative_to(CONF).parts[0]
    return f"{group}.schema.json" if group in GROUPS else EXPERIMENT


def walk(node: Any) -> list[dict[str, Any]]:
    """Every mapping inside a schema."""
    if isinstance(node, dict):
        return [node, *(m for v in node.values() for m in walk(v))]
    if isinstance(node, list):
        return [m for v in node for m in walk(v)]
    return []


# ------------------------------------------------------------------------------------------- generated files
def test_checked_in_schemas_are_what_the_generator_writes() -> None:
    assert stale(schema_dir()) == [], "the JSON schemas are stale: run python -m rlpipe.config.json_schema --write"


def test_check_names_stale_files_and_write_fixes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("rlpipe.config.json_schema.schema_dir", lambda: tmp_path)
    assert main(["--check"]) == 1  # an empty folder: every file is missing
    assert main(["--write"]) == 0 and main(["--check"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SCHEMAS)
    (tmp_path / "rollout.schema.json").write_text("{}\n")
    (tmp_path / "old.schema.json").write_text("{}\n")
    capsys.readouterr()
    assert main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "old.schema.json, rollout.schema.json" in err and "--write" in err
    assert main(["--write"]) == 0 and main(["--check"]) == 0
    assert not (tmp_path / "old.schema.json").exists()
    assert (tmp_path / "rollout.schema.json").read_bytes() == (schema_dir() / "rollout.schema.json").read_bytes()


def test_one_schema_per_group_and_the_experiment_schema() -> None:
    assert set(SCHEMAS) == {f"{group}.schema.json" for group in GROUPS} | {EXPERIMENT}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_draft_2020_12_and_requires_nothing(name: str) -> None:
    schema = SCHEMAS[name]
    assert schema["$schema"] == DRAFT
    Draft202012Validator.check_schema(schema)
    assert not [node for node in walk(schema) if "required" in node]  # a file sets only part of the config
    assert problems(name, {}) == []


# ------------------------------------------------------------------------------------------------ shipped YAMLs
@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CONF)) for p in SHIPPED])
def test_shipped_yaml_names_its_schema_and_validates(path: Path) -> None:
    schema = header_schema(path)
    assert schema == schema_dir() / expected_schema(path), f"{path}: no (or the wrong) yaml-language-server header"
    doc = yaml.safe_load(path.read_text()) or {}  # experiment=none holds comments only
    assert problems(schema.name, doc) == []


@pytest.mark.parametrize("path", sorted((CONF / "experiment").glob("*.yaml")), ids=lambda p: p.name)
def test_experiment_files_keep_the_package_directive_first(path: Path) -> None:
    """Hydra reads `# @` directives only until the first other line: the schema line must come after it."""
    first, second = path.read_text().splitlines()[:2]
    assert first == "# @package _global_" and HEADER.match(second)


# --------------------------------------------------------------------------------------- what the schemas check
def test_unknown_keys_are_rejected_in_group_and_experiment_files() -> None:
    assert problems("rollout.schema.json", {"n_sample": 8}) != []
    assert problems(EXPERIMENT, {"rollout": {"n_sample": 8}}) != []
    assert problems(EXPERIMENT, {"run_nme": "x"}) != []
    assert problems("eval.schema.json", {"datasets": {"aime": {"pth": "a.jsonl"}}}) != []


def test_free_form_maps_stay_open() -> None:
    assert problems("sglang.schema.json", {"extra": {"any_server_arg": {"nested": 1}}}) == []
    assert problems(EXPERIMENT, {"eval": {"datasets": {"my-set": {"path": "a.jsonl", "n_samples": 4}}}}) == []


def test_wrong_enum_values_are_rejected() -> None:
    assert problems("rollout.schema.json", {"mode": "async"}) == []
    assert problems("rollout.schema.json", {"mode": "asynch"}) != []
    assert problems(EXPERIMENT, {"algo": {"advantage_estimator": "grpo2"}}) != []


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("rollout.schema.json", {"n_samples": 0}),  # PositiveInt
        ("rollout.schema.json", {"top_p": 1.5}),  # le=1
        ("model.schema.json", {"attention_dropout": 1.0}),  # lt=1
        ("algo.schema.json", {"eps_clip_c": 1.0}),  # gt=1
        (EXPERIMENT, {"demo": {"digits": 9}}),  # le=8
    ],
)
def test_out_of_bounds_numbers_are_rejected(name: str, doc: dict[str, Any]) -> None:
    assert problems(name, doc) != []


@pytest.mark.parametrize("value", ["${demo.n}", "tiny-${demo.task}", "???"])
def test_interpolations_and_missing_marker_are_accepted_in_any_leaf(value: str) -> None:
    assert problems("rollout.schema.json", {"n_samples": value, "mode": value, "stop_token_ids": [value, 3]}) == []
    assert problems(EXPERIMENT, {"seed": value, "demo": {"digits": value}}) == []


def test_a_plain_string_is_still_rejected_in_an_int_field() -> None:
    assert problems("rollout.schema.json", {"n_samples": "eight"}) != []


def test_defaults_lists_are_allowed_at_the_top_of_any_file() -> None:
    assert problems("algo.schema.json", {"defaults": ["grpo", "_self_"], "use_tis": True}) == []
    assert problems(EXPERIMENT, {"defaults": [{"override /model": "tiny"}, "_self_", {"optional x": None}]}) == []
    assert problems(EXPERIMENT, {"defaults": "grpo"}) != []
    assert problems(EXPERIMENT, {"defaults": [{"override /model": "tiny", "cluster": "local"}]}) != []


# ------------------------------------------------------------------------------------------ carried through
def test_descriptions_enums_bounds_defaults_and_flags_are_carried_through() -> None:
    fields = RolloutConfig.model_fields
    for rollout in (SCHEMAS["rollout.schema.json"], SCHEMAS[EXPERIMENT]["$defs"]["RolloutConfig"]):
        n_samples, mode, top_p = (rollout["properties"][k] for k in ("n_samples", "mode", "top_p"))
        assert n_samples["description"] == fields["n_samples"].description
        assert n_samples["miles"] == "--n-samples-per-prompt"
        assert {"type": "integer", "exclusiveMinimum": 0} in n_samples["anyOf"]
        assert mode["description"] == fields["mode"].description and mode["default"] == "sync"
        assert {"type": "string", "enum": ["sync", "async"]} in mode["anyOf"]
        assert {"type": "number", "exclusiveMinimum": 0.0, "maximum": 1.0} in top_p["anyOf"]
    assert SCHEMAS["rollout.schema.json"]["description"] == RolloutConfig.__doc__


def test_every_schema_field_is_a_key_of_its_file() -> None:
    assert set(SCHEMAS[EXPERIMENT]["properties"]) == {"defaults", *RunConfig.model_fields}
    for group in GROUPS:
        model = RunConfig.model_fields[group].annotation
        assert set(SCHEMAS[f"{group}.schema.json"]["properties"]) == {"defaults", *model.model_fields}  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------------------- Miles import
def test_imported_experiment_names_the_schema_validates_and_still_composes(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    output = conf / "experiment" / "imported.yaml"
    result = import_miles((FIXTURES / "run-glm4-9B.sh").read_text(), base_dir=FIXTURES, variables={"WANDB_KEY": "k"})
    output.write_text(to_experiment_yaml(result, "imported", output))
    assert output.read_text().startswith("# @package _global_\n# yaml-language-server: $schema=")
    assert header_schema(output) == schema_dir() / EXPERIMENT
    assert problems(EXPERIMENT, yaml.safe_load(output.read_text())) == []
    run = load(["experiment=imported"], conf_dir=conf, check_paths=False)  # the package directive still read
    assert run.cfg.run_name == "imported"
    assert "yaml-language-server" not in to_experiment_yaml(result, "imported")  # no file: no relative path
