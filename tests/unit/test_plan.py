"""C2 planning: segments (chains), joins and the dry-run description."""

from __future__ import annotations

from orchestrator import Pipeline
from orchestrator.plan import build_plan
from tests.pipelines import add, noop, number


def test_linear_run_is_one_chain_capped_at_max_chain() -> None:
    p = Pipeline("lin")
    prev: list[str] = []
    for i in range(10):
        p.add_task(noop, name=f"s{i}", depends_on=prev)
        prev = [f"s{i}"]
    plan = build_plan(p, "q", max_chain=4)
    assert [s.nodes for s in plan.segments] == [
        ("s0", "s1", "s2", "s3"),
        ("s4", "s5", "s6", "s7"),
        ("s8", "s9"),
    ]
    assert plan.segments[1].released_by == ("s3",)
    assert plan.describe()[0]["canvas"].startswith("chain(tests.noop.si(run_id, 's0'), ")


def test_non_series_parallel_joins_are_ledger_counters() -> None:
    p = (
        Pipeline("nsp")
        .add_task(number, name="A")
        .add_task(number, name="B")
        .add_task(add, name="C", depends_on=["A"])
        .add_task(add, name="D", depends_on=["A", "B"])
    )
    plan = build_plan(p, "q")
    assert plan.roots == ["A", "B"]
    assert [s.nodes for s in plan.segments] == [("A",), ("B",), ("C",), ("D",)]
    d = next(r for r in plan.describe() if r["tasks"] == ["D"])
    assert d["release"] == "join: counter of 2 parents (A, B)"
    assert plan.fan_outs() == {"A": ["C", "D"]}
    assert not any(n.via_chain for n in plan.nodes.values())
