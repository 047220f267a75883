"""Strict params on the pure model: unknown fields at any depth, unknown tasks, nested --param paths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import Pipeline, task
from orchestrator.client import parse_param_overrides
from orchestrator.errors import ParamOverrideError, PipelineInvalid
from orchestrator.loader import load_pipeline
from orchestrator.validate import validate
from tests.pipelines import dbconn, noop, number

DATA = Path(__file__).resolve().parent.parent / "data"
PREFIXES = ("tasks.", "tests.")


def messages(pipeline: Pipeline) -> list[str]:
    return [str(p) for p in validate(pipeline)]


def one(params: dict[str, Any]) -> list[str]:
    return messages(Pipeline("p").add_task(dbconn, params=params))


def test_top_level_typo_names_the_field_and_the_known_ones() -> None:
    assert messages(Pipeline("p").add_task(number, params={"valeu": 3})) == [
        "task 'number': field 'params.valeu': unknown field (known: value)"
    ]


@pytest.mark.parametrize(
    ("params", "field", "known"),
    [
        ({"db": {"prot": 1}}, "params.db.prot", "host, port"),
        ({"replicas": [{"host": "a"}, {"hots": "b"}]}, "params.replicas.1.hots", "host, port"),
        ({"by_region": {"eu": {"port": 1, "portt": 2}}}, "params.by_region.eu.portt", "host, port"),
        ({"fallback": {"hostname": "x"}}, "params.fallback.hostname", "host, port"),
        ({"lable": "x"}, "params.lable", "by_region, db, fallback, label, replicas"),
    ],
)
def test_unknown_field_at_any_depth_is_an_error(params: dict[str, Any], field: str, known: str) -> None:
    assert one(params) == [f"task 'dbconn': field '{field}': unknown field (known: {known})"]


def test_known_nested_fields_pass() -> None:
    params = {
        "db": {"host": "h", "port": 1},
        "replicas": [{"host": "r1"}],
        "by_region": {"eu": {"port": 2}},
        "fallback": None,
        "label": "x",
    }
    assert one(params) == []


def test_unknown_field_and_a_type_error_are_reported_together() -> None:
    assert one({"db": {"prot": 1, "port": "abc"}}) == [
        "task 'dbconn': field 'params.db.prot': unknown field (known: host, port)",
        "task 'dbconn': field 'params.db.port': Input should be a valid integer, unable to parse string as an "
        "integer (got 'abc')",
    ]


class Inner(BaseModel):
    x: int = 0


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    inner: Inner = Inner()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int = 0


class A(BaseModel):
    kind_a: int


class B(BaseModel):
    kind_b: int


class Shapes(BaseModel):
    loose: Loose = Loose()
    strict: Strict = Strict()
    aliased: Annotated[Inner, Field(alias="Aliased")] = Inner()
    either: A | B | None = None
    pairs: tuple[Inner, ...] = ()


@task(name="tests.shapes")
def shapes(config: Shapes) -> None: ...


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"loose": {"anything": 1}}, []),  # the model allows extras: its choice
        ({"loose": {"inner": {"y": 1}}}, ["params.loose.inner.y"]),  # but its nested models do not
        ({"strict": {"b": 1}}, ["params.strict.b"]),  # extra='forbid' reported once, with the known fields
        ({"Aliased": {"x": 1}}, []),
        ({"Aliased": {"z": 1}}, ["params.Aliased.z"]),
        ({"either": {"kind_b": 1}}, []),
        ({"either": {"kind_b": 1, "kind_c": 2}}, ["params.either.kind_c"]),
        ({"pairs": [{"x": 1}, {"w": 2}]}, ["params.pairs.1.w"]),
    ],
)
def test_model_shapes(params: dict[str, Any], expected: list[str]) -> None:
    problems = validate(Pipeline("p").add_task(shapes, params=params))
    assert [p.field for p in problems] == expected
    assert all(p.message.startswith("unknown field (known: ") for p in problems)


def test_toml_unknown_nested_field_names_file_task_and_path() -> None:
    path = DATA / "unknown_param.toml"
    assert messages(load_pipeline(path, PREFIXES)) == [
        f"{path}: task 'dbconn': field 'params.db.prot': unknown field (known: host, port)"
    ]


def test_nested_param_override_merges_with_the_file() -> None:
    pipeline = load_pipeline(DATA / "nested_params.toml", PREFIXES)
    overrides = parse_param_overrides(["dbconn.db.port=6000", 'dbconn.replicas=[{"host": "r"}]'], pipeline)
    assert overrides == {"dbconn": {"db": {"port": 6000}, "replicas": [{"host": "r"}]}}
    merged = pipeline.with_params(overrides)
    assert merged.node("dbconn").params == {
        "label": "primary",
        "db": {"host": "db1", "port": 6000},
        "replicas": [{"host": "r"}],
    }
    assert pipeline.node("dbconn").params["db"] == {"host": "db1", "port": 5433}  # the original is untouched
    assert validate(merged) == []


def test_nested_override_typo_and_bad_value_are_errors() -> None:
    pipeline = load_pipeline(DATA / "nested_params.toml", PREFIXES)
    typo = pipeline.with_params(parse_param_overrides(["dbconn.db.prot=1"], pipeline))
    assert [p.field for p in validate(typo)] == ["params.db.prot"]
    bad = pipeline.with_params(parse_param_overrides(["dbconn.db.port=abc"], pipeline))
    assert [(p.field, p.message.split(",")[0]) for p in validate(bad)] == [
        ("params.db.port", "Input should be a valid integer")
    ]


def test_param_override_paths() -> None:
    p = Pipeline("p").add_task(dbconn).add_task(noop, name="etl.step")
    assert parse_param_overrides(["etl.step.x.y=1"], p) == {"etl.step": {"x": {"y": 1}}}  # dotted task names
    assert parse_param_overrides(["dbconn.db.host=a", "dbconn.db.port=2"], p) == {
        "dbconn": {"db": {"host": "a", "port": 2}}
    }
    for bad, why in [
        ("dbconn=1", "expected TASK.FIELD=VALUE"),
        ("dbconn.db..port=1", "expected TASK.FIELD=VALUE"),
        ("dbconn.db.port", "expected TASK.FIELD=VALUE"),
        ("nosuch.db=1", "pipeline has no task 'nosuch'"),
    ]:
        with pytest.raises(ParamOverrideError, match=why):
            parse_param_overrides([bad], p)
    with pytest.raises(ParamOverrideError, match="'dbconn.db' is already set to a value"):
        parse_param_overrides(["dbconn.db=1", "dbconn.db.port=2"], p)
    with pytest.raises(ParamOverrideError, match="already has nested --param fields"):
        parse_param_overrides(["dbconn.db.port=2", "dbconn.db=1"], p)


def test_params_for_an_unknown_task_are_an_error() -> None:
    p = Pipeline("p").add_task(number).add_task(dbconn)
    with pytest.raises(PipelineInvalid) as exc:
        p.with_params({"numbr": {"value": 1}, "dbconn": 5})  # type: ignore[dict-item]
    assert [str(x) for x in exc.value.problems] == [
        "task 'numbr': params given for unknown task (tasks: number, dbconn)",
        "task 'dbconn': params must be a mapping of field to value, got int",
    ]
