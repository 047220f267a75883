"""C1 validation of the pure model: every check, with its message (no Redis, no Celery)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from orchestrator import Pipeline, task
from orchestrator.errors import PipelineInvalid, TaskDefinitionError
from orchestrator.loader import load_pipeline
from orchestrator.validate import validate
from tests.pipelines import add, double, noop, number, stamp

DATA = Path(__file__).resolve().parent.parent / "data"
PREFIXES = ("tasks.", "tests.")


def messages(pipeline: Pipeline) -> list[str]:
    return [str(p) for p in validate(pipeline)]


def test_valid_pipeline_has_no_problems() -> None:
    p = Pipeline("ok").add_task(number).add_task(double, depends_on=["number"])
    assert validate(p) == []


def test_cycle_is_named() -> None:
    p = (
        Pipeline("c")
        .add_task(add, name="a", depends_on=["c"])
        .add_task(add, name="b", depends_on=["a"])
        .add_task(add, name="c", depends_on=["b"])
    )
    assert messages(p) == ["dependency cycle: a -> b -> c -> a"]


def test_duplicate_and_missing_dependency() -> None:
    p = Pipeline("d").add_task(noop, name="x").add_task(noop, name="x").add_task(add, name="y", depends_on=["zz"])
    assert messages(p) == ["task 'x': duplicate task name", "task 'y': depends on unknown task 'zz'"]


def test_params_failing_the_model_name_the_field() -> None:
    p = Pipeline("p").add_task(number, params={"value": "lots"})
    (msg,) = messages(p)
    assert msg.startswith("task 'number': field 'params.value': Input should be a valid integer")


def test_unknown_param_field_is_rejected_only_if_model_forbids_and_noparam_tasks_reject_params() -> None:
    p = Pipeline("p").add_task(noop, params={"x": 1})
    assert messages(p) == ["task 'noop': takes no params but got ['x']"]


def test_upstream_type_mismatch_names_both_sides() -> None:
    p = Pipeline("t").add_task(stamp, name="number").add_task(double, depends_on=["number"])
    assert messages(p) == ["task 'double': input 'number' expects Count but task 'number' returns Stamp"]


def test_parameter_without_dependency() -> None:
    p = Pipeline("t").add_task(double)
    assert messages(p) == ["task 'double': parameter 'number' has no dependency named 'number'"]


def test_task_definition_errors_at_decoration() -> None:
    with pytest.raises(TaskDefinitionError, match="parameter 'config' must be annotated with a pydantic model"):

        @task
        def bad(config: dict) -> None: ...

    with pytest.raises(TaskDefinitionError, match=r"\*args is not supported"):

        @task
        def bad2(*args: int) -> None: ...

    with pytest.raises(TaskDefinitionError, match="trigger_rule 'sometimes'"):

        @task(trigger_rule="sometimes")
        def bad3() -> None: ...

    with pytest.raises(TaskDefinitionError, match="not a chordflow task"):
        Pipeline("x").add_task(print)


class Cfg(BaseModel):
    n: int


def test_config_model_is_used() -> None:
    @task(name="tests.unit.cfg")
    def f(config: Cfg) -> int:
        return config.n

    assert messages(Pipeline("x").add_task(f, params={})) == ["task 'f': field 'params.n': required param missing"]


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("cycle.toml", ["cycle.toml: dependency cycle: a -> b -> c -> a"]),
        ("missing_dep.toml", ["missing_dep.toml: task 'a': depends on unknown task 'nowhere'"]),
        ("bad_params.toml", ["bad_params.toml: task 'number': field 'params.value': Input should be a valid integer"]),
        (
            "unknown_import.toml",
            [
                "unknown_import.toml: task 'a': field 'uses': module 'tests.pipelines' has no attribute "
                "'does_not_exist'",
                "unknown_import.toml: task 'b': field 'uses': cannot import module 'tests.nomodule'",
                "unknown_import.toml: task 'c': field 'uses': 'os.system' is outside the allowed task packages",
            ],
        ),
        (
            "type_mismatch.toml",
            ["type_mismatch.toml: task 'double': input 'number' expects Count but task 'number' returns Stamp"],
        ),
        ("duplicate.toml", ["duplicate.toml: invalid TOML: Cannot declare ('tasks', 'a') twice"]),
    ],
)
def test_pipeline_files(file: str, expected: list[str]) -> None:
    try:
        problems = [str(p) for p in validate(load_pipeline(DATA / file, PREFIXES))]
    except PipelineInvalid as exc:
        problems = [str(p) for p in exc.problems]
    problems = [p.replace(str(DATA) + "/", "") for p in problems]
    assert len(problems) == len(expected), problems
    for got, want in zip(problems, expected, strict=True):
        assert got.startswith(want), (got, want)


def test_unknown_field_in_file(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[pipeline]\nname = "x"\n[tasks.a]\nuses = "tests.pipelines.noop"\ndepend_on = ["b"]\n')
    with pytest.raises(PipelineInvalid) as exc:
        load_pipeline(f, PREFIXES)
    assert [str(p) for p in exc.value.problems] == [f"{f}: task 'a': field 'depend_on': unknown field"]


def test_missing_file() -> None:
    with pytest.raises(PipelineInvalid, match="file not found"):
        load_pipeline("/nonexistent/pipeline.toml", PREFIXES)
