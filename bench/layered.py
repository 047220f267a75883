"""Scenario 3 — layered DAG: ``depth`` layers of ``width`` no-ops, each node depending on 2-3
nodes of the previous layer (j, j+1, j+7 mod width).

chordflow: that exact DAG (each node starts when its own parents are done).
raw Celery has no per-node dependencies, so it runs the level-synchronised forms:
  * nested chords ``chord(g0, chord(g1, ... chord(g9, collect)))`` — width*depth + 1 tasks;
  * chain of chords ``chain(g0, collect, g1, collect, ...)`` — width*depth + depth tasks
    (never ``chain(group, group)``: Celery 5.7 duplicates executions there).
Every node of layer k receives the whole layer k-1's results (``.s()``), a superset of its parents.
Dask: the exact DAG as futures (``client.submit(noop, *parent_futures)``).
"""

from __future__ import annotations

from typing import Any

from bench import cf_tasks, common, dask_peer
from bench import raw_celery_app as rc

NAME = "layered"
TITLE = "3. Layered DAG"
FORMS = {"raw_nested": "nested", "raw_chain": "chain"}


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    w, d = cfg.layered_width, cfg.layered_depth
    n = w * d
    pipeline = cf_tasks.layered(w, d)
    systems = ["chordflow", "raw_nested", "raw_chain"]
    s = {k: common.Samples() for k in systems}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in systems}
    ex0 = common.executed(stack)
    for rep in range(cfg.repeat):
        for system in common.alternate(rep, systems):
            if system == "chordflow":
                out = common.cf_run(stack, pipeline)
            else:
                form = FORMS[system]
                sig = rc.layered_nested_chords(w, d) if form == "nested" else rc.layered_chain_of_chords(w, d)
                out = common.raw_run(stack, sig, rc.layered_task_count(w, d, form), check=lambda v: v == w)
            s[system].add(submit_s=out["submit_s"], e2e_s=out["e2e_s"], nodes_per_s=n / out["e2e_s"])
            runs[system].append(out)
            e2e = out["e2e_s"]
            common.log(f"layered {w}x{d} {system} rep {rep + 1}: e2e {e2e:.3f}s = {n / e2e:.0f} nodes/s")
    return common.scenario_result(stack, ex0, s, runs, width=w, depth=d, n=n)


def measure_dask(client: Any, cfg: common.Config) -> dict[str, Any]:
    s = common.Samples()
    n = cfg.layered_width * cfg.layered_depth
    for _ in range(cfg.repeat):
        out = dask_peer.layered(client, cfg.layered_width, cfg.layered_depth)
        s.add(submit_s=out["submit_s"], e2e_s=out["e2e_s"], nodes_per_s=n / out["e2e_s"])
    return s.summaries()


def report(data: dict[str, Any], cfg: common.Config) -> tuple[str, list[dict[str, Any]]]:
    cf, nested, chained, dk = (data.get(k, {}) for k in ("chordflow", "raw_nested", "raw_chain", "dask"))
    n = data["n"]
    checks = []
    rows = []
    for label, raw in (("nested chords", nested), ("chain of chords", chained)):
        r = common.ratio(cf.get("e2e_s"), raw.get("e2e_s"))
        speed = common.ratio(cf.get("nodes_per_s"), raw.get("nodes_per_s"))
        ok1 = None if r is None else r <= 1.0
        ok3 = None if speed is None else speed >= 3.0
        checks.append({"scenario": NAME, "target": f"layered e2e ratio vs {label} ≤ 1.0", "value": r, "pass": ok1})
        checks.append({"scenario": NAME, "target": f"layered nodes/s ≥ 3× raw {label}", "value": speed, "pass": ok3})
        rows.append((label, r, speed, ok1, ok3))
    lines = [
        f"### {TITLE}: {data['depth']} layers × {data['width']} = {n:,} nodes, 2–3 parents each",
        "",
        "| metric | chordflow (exact DAG) | raw Celery nested chords | raw Celery chain of chords | Dask futures "
        "(exact DAG) |",
        "|---|---|---|---|---|",
        f"| end to end (s) | {common.fmt(cf.get('e2e_s'))} | {common.fmt(nested.get('e2e_s'))} | "
        f"{common.fmt(chained.get('e2e_s'))} | {common.fmt(dk.get('e2e_s'))} |",
        f"| nodes/s | {common.fmt(cf.get('nodes_per_s'))} | {common.fmt(nested.get('nodes_per_s'))} | "
        f"{common.fmt(chained.get('nodes_per_s'))} | {common.fmt(dk.get('nodes_per_s'))} |",
        f"| submission time (s) | {common.fmt(cf.get('submit_s'))} | {common.fmt(nested.get('submit_s'))} | "
        f"{common.fmt(chained.get('submit_s'))} | {common.fmt(dk.get('submit_s'))} |",
        "",
        "| chordflow vs | ratio of e2e times chordflow/raw | target | result | nodes/s chordflow ÷ raw | target | "
        "result |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r, speed, ok1, ok3 in rows:
        lines.append(
            f"| raw {label} | {_r(r)} | ≤ 1.0 | {common.status(ok1)} | {_r(speed)}× | ≥ 3× | {common.status(ok3)} |"
        )
    lines += [
        "",
        "raw Celery runs extra barrier tasks (`collect`): 1 for nested chords, one per layer for the chain of "
        "chords; nodes/s counts only the DAG's nodes. Executions counted by the workers (all repetitions): "
        + "; ".join(f"{k}: {v}" for k, v in (data.get("executed") or {}).items())
        + ".",
        "",
    ]
    return "\n".join(lines), checks


def _r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"
