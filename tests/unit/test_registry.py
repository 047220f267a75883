"""Published pipelines without Redis: the plan round-trips through JSON, params are checked by JSON Schema
as strictly as :mod:`orchestrator.validate` checks them with the models, secrets are never quoted."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from orchestrator import Pipeline, task
from orchestrator.errors import PipelineInvalid
from orchestrator.loader import load_pipeline
from orchestrator.params_schema import check_params, strict_schema
from orchestrator.plan import ExecutionPlan, build_plan
from orchestrator.registry import PublishedPipeline, describe
from tests.conftest import REPO


class Db(BaseModel):
    host: str = "localhost"
    port: int = 5432


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = ""


class ConnConfig(BaseModel):
    db: Db = Db()
    replicas: list[Db] = []
    by_region: dict[str, Db] = {}
    fallback: Db | None = None
    labels: dict[str, int] = {}
    extra: Open = Open()
    password: SecretStr = SecretStr("")


@task(name="tests.unit.registry.conn", secret_fields=("pin",))
def conn(config: ConnConfig) -> None:
    """Never run: its config model is what the schema checks are compared with."""


@task(name="tests.unit.registry.plain")
def plain(conn: Any = None) -> None:
    """Takes no params."""


def published() -> PublishedPipeline:
    p = Pipeline("reg").add_task(conn, params={"db": {"host": "db1"}}).add_task(plain, depends_on=["conn"])
    return PublishedPipeline.from_json(describe(p, build_plan(p, "q"), "desc").to_json())


def problems(params: dict[str, Any]) -> list[str]:
    with pytest.raises(PipelineInvalid) as exc:
        published().plan_with(params)
    return [str(p) for p in exc.value.problems]


def test_execution_plan_round_trips_through_json() -> None:
    pipeline = load_pipeline(REPO / "tasks" / "etl" / "pipeline.toml")
    plan = build_plan(pipeline, "chordflow", max_chain=2)
    again = ExecutionPlan.from_dict(plan.to_dict())
    assert again == plan and again.describe() == plan.describe() and again.roots == plan.roots


def test_record_round_trips_and_hash_covers_content_only() -> None:
    a, b = published(), published()
    assert a.hash == b.hash and a.plan.nodes["conn"].params == {"db": {"host": "db1"}}
    other = Pipeline("reg").add_task(conn, params={"db": {"host": "db2"}}).add_task(plain, depends_on=["conn"])
    assert describe(other, build_plan(other, "q")).hash != a.hash


def test_strict_schema_closes_ignoring_models_and_keeps_open_ones() -> None:
    schema = strict_schema(ConnConfig.model_json_schema())
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Db"]["additionalProperties"] is False
    assert schema["$defs"]["Open"]["additionalProperties"] is True  # extra='allow' stays open
    assert schema["properties"]["labels"]["additionalProperties"] == {"type": "integer"}  # dict values typed


def test_params_merge_into_defaults_and_validate() -> None:
    plan = published().plan_with({"conn": {"db": {"port": 1}, "extra": {"anything": 1}}})
    assert plan.nodes["conn"].params == {"db": {"host": "db1", "port": 1}, "extra": {"anything": 1}}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"conn": {"db": {"hots": "x"}}}, "task 'conn': field 'params.db.hots': unknown field (known: host, port)"),
        ({"conn": {"replicas": [{}, {"prot": 1}]}}, "task 'conn': field 'params.replicas.1.prot': unknown field"),
        ({"conn": {"by_region": {"eu": {"hots": 1}}}}, "task 'conn': field 'params.by_region.eu.hots': unknown field"),
        ({"conn": {"fallback": {"hots": 1}}}, "task 'conn': field 'params.fallback.hots': unknown field"),
        ({"conn": {"db": {"port": "x"}}}, "task 'conn': field 'params.db.port': Input should be a valid integer (got"),
        ({"conn": {"labels": {"a": "b"}}}, "task 'conn': field 'params.labels.a': Input should be a valid integer"),
        ({"nope": {}}, "task 'nope': params given for unknown task (tasks: conn, plain)"),
        ({"plain": {"a": 1}}, "task 'plain': takes no params but got ['a']"),
        ({"conn": []}, "task 'conn': params must be a mapping of field to value, got list"),
    ],
)
def test_problems_name_task_and_field_path(params: dict[str, Any], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(params)), problems(params)


def test_too_deep_params_are_refused_before_the_schema_walk() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = {"x": deep}
    assert any("max_param_depth" in p for p in problems({"conn": {"extra": deep}}))


def test_secret_values_are_never_quoted() -> None:
    schema = strict_schema(ConnConfig.model_json_schema())
    found = check_params("conn", schema, {"password": 12345678}) + check_params("conn", schema, {"db": {"pin": 1}})
    assert found and all("12345678" not in str(p) for p in found)
    pub = published()
    assert pub.masker("conn").data({"password": "hunter22", "pin": "1234"}) == {"password": "***", "pin": "***"}
