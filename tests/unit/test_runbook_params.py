"""The runbook's one parameter schema: validation, CLI parsing, the parameters cell."""

from __future__ import annotations

import ast
import dataclasses
import json
import typing
from pathlib import Path

import pytest

from rtbook.exceptions import ConfigError, InputError
from rtbook.runbook.notebooks import NOTEBOOKS, select_notebooks
from rtbook.runbook.params import (
    PARAMS,
    RunParams,
    check_value,
    default_params,
    load_params_file,
    notebook_params,
    parameters_cell_source,
    parse_assignment,
    validate_params,
)

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiIsImlzcyI6InN1cGFiYXNlIn0."
    "c2lnbmF0dXJlX2J5dGVzX2hlcmVfMTIzNDU2Nzg5MA"
)


def test_defaults_are_valid_and_complete() -> None:
    params = validate_params({})
    assert params == default_params()
    assert set(params) == {p.name for p in PARAMS}


def test_unknown_parameter_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_params({"tennant": "realtime-dev"})
    assert "'tennant'" in str(exc.value)
    assert "did you mean 'tenant'" in str(exc.value)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("timeout_s", "10", "must be a number"),
        ("timeout_s", True, "must be a number"),
        ("timeout_s", -1.0, "between 0 and 3600"),
        ("apply_fixes", "yes", "true or false"),
        ("apply_fixes", 1, "true or false"),
        ("tables", "public.messages", "list of strings"),
        ("tables", ["messages"], "schema.table"),
        ("docker", "maybe", "one of 'auto', 'on', 'off'"),
        ("target_kind", "kubernetes", "one of 'sandbox', 'stack'"),
        ("api_url", "localhost:8000", "http:// or https://"),
        ("tenant", 42, "must be a string"),
    ],
)
def test_mistyped_values_are_refused_with_the_value(name: str, value: object, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_params({name: value})
    assert name in str(exc.value)
    assert words in str(exc.value)


@pytest.mark.parametrize("name", ["jwt_secret", "anon_key", "postgres_password", "service_role_key", "api_token"])
def test_secret_looking_names_are_refused_as_secrets(name: str) -> None:
    with pytest.raises(ConfigError, match="looks like a secret"):
        validate_params({name: "whatever"})
    with pytest.raises(ConfigError, match="looks like a secret"):
        parse_assignment(f"{name}=whatever")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("tenant", JWT),
        ("realtime_host", "sb_secret_abcdefghijklmnop1234"),
        ("tables", ["public.x", "Bearer abcdefghijklmnop"]),
        ("api_url", "http://localhost:8000/?apikey=abcdefghijklmnop"),
    ],
)
def test_secret_looking_values_are_refused_without_echoing_them(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_params({name: value})
    text = str(exc.value)
    assert "secrets are never parameters" in text
    assert JWT not in text and "sb_secret_abcdefghijklmnop1234" not in text and "abcdefghijklmnop" not in text


def test_value_equal_to_an_environment_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-Zq8wX1vR4tY7uI0oP3aS"
    monkeypatch.setenv("JWT_SECRET", canary)
    with pytest.raises(ConfigError, match="secret found in the environment") as exc:
        validate_params({"tenant": canary})
    assert canary not in str(exc.value)


def test_db_url_with_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="must not contain a password") as exc:
        validate_params({"db_url": "postgresql://postgres:hunter2hunter2@localhost:5432/postgres"})
    assert "hunter2" not in str(exc.value)
    ok = validate_params({"db_url": "postgresql://supabase_admin@localhost:5432/postgres"})
    assert ok["db_url"] == "postgresql://supabase_admin@localhost:5432/postgres"


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="'stack_dir' is required when target_kind is 'stack'"):
        validate_params({"target_kind": "stack"})
    with pytest.raises(ConfigError, match="confirm_apply"):
        validate_params({"apply_fixes": True})
    assert validate_params({"apply_fixes": True, "confirm_apply": True})["apply_fixes"] is True


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("apply_fixes=true", "apply_fixes", True),
        ("strict=No", "strict", False),
        ("timeout_s=2.5", "timeout_s", 2.5),
        ("tables=public.a, public.b", "tables", ["public.a", "public.b"]),
        ('tables=["public.a"]', "tables", ["public.a"]),
        ("tenant=realtime-dev", "tenant", "realtime-dev"),
        ("api_url=http://localhost:8000/?x=1", "api_url", "http://localhost:8000/?x=1"),
        ("realtime_url=https://rt.example.com", "realtime_url", "https://rt.example.com"),
    ],
)
def test_cli_assignments_are_typed(text: str, name: str, value: object) -> None:
    assert parse_assignment(text) == (name, value)


@pytest.mark.parametrize("text", ["tenant", "timeout_s=soon", "strict=perhaps", "tables=[oops", "bogus=1"])
def test_bad_cli_assignments(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_assignment(text)


def test_params_file_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps({"tenant": "t1", "tables": ["public.a"]}))
    (tmp_path / "p.yaml").write_text("tenant: t2\nstrict: true\n")
    assert validate_params(load_params_file(tmp_path / "p.json"))["tables"] == ["public.a"]
    assert validate_params(load_params_file(tmp_path / "p.yaml"))["strict"] is True
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="mapping"):
        load_params_file(tmp_path / "bad.json")
    with pytest.raises(InputError, match="cannot read"):
        load_params_file(tmp_path / "missing.json")


def test_notebook_params_spots_injected_unknown_names() -> None:
    import os

    namespace: dict[str, object] = {
        **default_params(),
        "In": [],
        "_": None,
        "os": os,
        "get_ipython": lambda: None,
        "run": object(),
        "target": object(),
    }
    assert notebook_params(namespace)["target_kind"] == "sandbox"
    namespace["tenat"] = "x"
    with pytest.raises(ConfigError, match="unknown parameter 'tenat'"):
        notebook_params(namespace)
    del namespace["tenat"]
    namespace["target"] = "sandbox"  # papermill -p target sandbox: a value, not the notebook's Target
    with pytest.raises(ConfigError, match="did you mean 'target_kind'"):
        notebook_params(namespace)


def test_parameters_cell_is_what_papermill_documents() -> None:
    from nbformat.v4 import new_code_cell
    from papermill.translators import PythonTranslator

    inferred = PythonTranslator.inspect(new_code_cell(parameters_cell_source()))
    assert [p.name for p in inferred] == [p.name for p in PARAMS]
    for found, param in zip(inferred, PARAMS, strict=True):
        assert found.inferred_type_name == param.type_name
        assert found.help == param.help
        # The default written in the cell evaluates to the schema's default.
        assert ast.literal_eval(found.default) == param.default


def test_notebook_selection() -> None:
    assert [n.name for n in select_notebooks("03,01")] == ["01_setup", "03_kong_routing"]
    assert [n.name for n in select_notebooks(["05_troubleshooting"])] == ["05_troubleshooting"]
    assert [n.name for n in select_notebooks(None)][-2:] == ["06_scale_out", "07_load_test"]
    assert len(select_notebooks(None)) == len(NOTEBOOKS) == 8
    with pytest.raises(ConfigError, match="no notebook '09'"):
        select_notebooks("09")


def test_run_params_has_one_typed_field_per_schema_entry() -> None:
    fields = dataclasses.fields(RunParams)
    assert [f.name for f in fields] == [p.name for p in PARAMS]
    hints = typing.get_type_hints(RunParams)
    for field, param in zip(fields, PARAMS, strict=True):
        expected = tuple[str, ...] if param.type is list else param.type
        assert hints[field.name] == expected, field.name
        default = field.default
        assert (list(default) if isinstance(default, tuple) else default) == param.default, field.name
    assert RunParams().as_dict() == default_params()


def test_run_params_is_frozen_and_typed() -> None:
    params = RunParams.from_mapping({"tables": ["public.a", " public.b "], "timeout_s": 5})
    assert params.tables == ("public.a", "public.b")
    assert params.timeout_s == 5.0 and isinstance(params.timeout_s, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.tenant = "x"  # type: ignore[misc]
    assert params.as_dict()["tables"] == ["public.a", "public.b"]
    # replace() validates again.
    with pytest.raises(ConfigError, match="http:// or https://"):
        params.replace(api_url="localhost:8000")


@pytest.mark.parametrize("value", [0, 0.0, -1.0, 3600.5, 1e9])
def test_out_of_range_numbers_are_refused_with_the_range_not_clamped(value: float) -> None:
    for build in (lambda: RunParams(timeout_s=value), lambda: RunParams.from_mapping({"timeout_s": value}),
                  lambda: RunParams.from_assignments([f"timeout_s={value}"])):
        with pytest.raises(ConfigError) as exc:
            build()
        assert "between 0 and 3600 seconds (0 < t <= 3600), got " in str(exc.value)
    assert RunParams(timeout_s=3600).timeout_s == 3600.0


def test_assignments_and_mappings_give_the_same_errors() -> None:
    with pytest.raises(ConfigError) as from_cli:
        RunParams.from_assignments(["api_url=localhost:8000"])
    with pytest.raises(ConfigError) as from_mapping:
        RunParams.from_mapping({"api_url": "localhost:8000"})
    assert str(from_cli.value) == str(from_mapping.value)
    assert RunParams.from_assignments(["tenant=t2"], base={"tenant": "t1", "strict": True}).tenant == "t2"


def test_db_url_must_be_postgresql() -> None:
    with pytest.raises(ConfigError, match="must be a PostgreSQL URL"):
        RunParams(db_url="mysql://root@localhost/db")
    for ok in ("postgresql://u@h:5432/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert RunParams(db_url=ok).db_url == ok


def test_check_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--api-url must start with http:// or https://"):
        check_value("api_url", "ftp://x", label="--api-url")
    assert check_value("timeout_s", 3, label="--timeout") == 3.0
