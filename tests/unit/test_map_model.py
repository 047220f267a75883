"""Map nodes in the pure model: declaration (Python and TOML), validation messages, the plan, and
MapResults reading lazily in order (no Redis, no Celery)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import MapResults, Pipeline, task
from orchestrator.loader import load_pipeline
from orchestrator.map_results import split
from orchestrator.plan import ExecutionPlan, build_plan
from orchestrator.validate import validate
from tests.map_tasks import plus_one, span, square, total, total_after
from tests.pipelines import number


def _msgs(p: Pipeline) -> list[str]:
    return [str(x) for x in validate(p)]


def test_a_map_pipeline_is_valid_and_planned_flat() -> None:
    p = (
        Pipeline("m")
        .add_task(span, params={"n": 3})
        .add_map(square, over="span", max_in_flight=7, batch_size=2, allow_failed=0.25)
        .add_map(plus_one, over="square")
        .add_task(total_after, depends_on=["plus_one"])
    )
    assert validate(p) == []
    plan = build_plan(p, "q")
    assert plan.nodes["square"].map == {"over": "span", "max_in_flight": 7, "batch_size": 2,
                                        "allow_failed": 0.25, "stream": False}  # fmt: skip
    assert plan.nodes["plus_one"].map["stream"] is True
    # maps and the children of maps are released by the ledger, never by a Celery chain
    assert not any(n.via_chain for n in plan.nodes.values())
    assert ExecutionPlan.from_dict(plan.to_dict()).nodes["square"].map == plan.nodes["square"].map


def test_map_problems_name_the_task_and_field() -> None:
    @task(name="tests.unit.one")
    def one(x: int) -> int:
        return x

    p = Pipeline("bad").add_task(number).add_map(one, over="number", max_in_flight=0)
    msgs = _msgs(p)
    assert any("max_in_flight must be an integer from 1 to 10000" in m and "one" in m for m in msgs)
    assert any("its task needs a parameter named 'number'" in m for m in msgs)
    assert any("maps over 'number', which returns" in m and "not a list" in m for m in msgs)


def test_a_map_after_a_map_cannot_have_other_parents_or_a_batch_size() -> None:
    p = (
        Pipeline("s")
        .add_task(span, params={"n": 3})
        .add_task(span, name="other", params={"n": 1})
        .add_map(square, over="span")
        .add_map(plus_one, over="square", depends_on=["other"], batch_size=3)
    )
    msgs = _msgs(p)
    assert any("cannot depend on other tasks" in m for m in msgs)
    assert any("batch_size cannot be set" in m for m in msgs)


def test_allow_failed_fraction_must_be_below_one() -> None:
    p = Pipeline("f").add_task(span, params={"n": 3}).add_map(square, over="span", allow_failed=1.5)
    assert any("fraction of the chunks and must be below 1" in m for m in _msgs(p))


def test_a_reduce_parameter_must_be_a_sequence() -> None:
    @task(name="tests.unit.scalar_reduce")
    def scalar_reduce(square: int) -> int:
        return square

    p = Pipeline("r").add_task(span, params={"n": 3}).add_map(square, over="span").add_task(
        scalar_reduce, depends_on=["square"])  # fmt: skip
    assert any("is a map: annotate it MapResults[T]" in m for m in _msgs(p))
    ok = Pipeline("r").add_task(span, params={"n": 3}).add_map(square, over="span")
    ok.add_task(total, depends_on=["square"])
    assert validate(ok) == []


def test_toml_map_table(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text(
        '[pipeline]\nname = "m"\n[tasks.span]\nuses = "tests.map_tasks.span"\nparams = { n = 4 }\n'
        '[tasks.square]\nuses = "tests.map_tasks.square"\nmap = { over = "span", max_in_flight = 3 }\n'
        '[tasks.total]\nuses = "tests.map_tasks.total"\ndepends_on = ["square"]\n'
    )
    p = load_pipeline(f, ("tests.",))
    assert p.node("square").depends_on == ("span",) and p.node("square").map.max_in_flight == 3
    assert validate(p) == []
    f.write_text('[pipeline]\nname = "m"\n[tasks.square]\nuses = "tests.map_tasks.square"\nmap = { ovr = "x" }\n')
    with pytest.raises(Exception, match="map"):
        load_pipeline(f, ("tests.",))


def test_split_into_batches() -> None:
    assert split([1, 2, 3, 4, 5], 2) == ["[1,2]", "[3,4]", "[5]"]
    assert split([], 3) == []


def test_map_results_reads_a_batch_of_chunks_at_a_time_in_order() -> None:
    calls = []
    rows = {i: ("succeeded", f"[{i}]", None) for i in range(600)}
    rows[5] = ("failed", None, '{"type": "ValueError", "message": "bad"}')

    def fetch(start: int, stop: int) -> list:
        calls.append((start, stop))
        return [rows[i] for i in range(start, stop)]

    res: MapResults[int] = MapResults("m", 600, fetch, int)
    it = iter(res)
    assert [next(it) for _ in range(3)] == [0, 1, 2] and calls == [(0, 256)]  # lazy: one batch read so far
    rest = list(it)
    assert len(rest) == 596 and calls == [(0, 256), (256, 512), (512, 600)]
    assert [(f.index, f.error["type"]) for f in res.failed] == [(5, "ValueError")]
