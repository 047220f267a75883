"""Scenario 1 — flat fan-out: N independent no-op tasks, results kept.

chordflow: a pipeline of N root nodes (results land in the run's results hash).
raw Celery: ``group(noop.s() x N).apply_async()`` then ``GroupResult.get()`` (Redis result backend).
Dask: ``client.map(noop, range(N))`` then ``client.gather``.
Metrics: submission time, end-to-end time and tasks/s.
"""

from __future__ import annotations

from typing import Any

from bench import cf_tasks, common, dask_peer
from bench import raw_celery_app as rc

NAME = "fanout"
TITLE = "1. Flat fan-out"


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    n = cfg.fanout_n
    pipeline = cf_tasks.fanout(n)
    s = {"chordflow": common.Samples(), "raw": common.Samples()}
    runs: dict[str, list[dict[str, Any]]] = {"chordflow": [], "raw": []}
    ex0 = common.executed(stack)
    for rep in range(cfg.repeat):
        for system in common.alternate(rep, ["chordflow", "raw"]):
            if system == "chordflow":
                out = common.cf_run(stack, pipeline)
                s[system].add(collect_s=out["collect_s"])
                timing = common.ledger_timing(stack, out["run_id"])
                if timing:
                    s[system].add(**timing)
            else:
                out = common.raw_run(stack, rc.fanout(n), n, check=lambda v: len(v) == n)
            s[system].add(submit_s=out["submit_s"], e2e_s=out["e2e_s"], tasks_per_s=n / out["e2e_s"])
            runs[system].append(out)
            common.log(f"fanout {n} {system} rep {rep + 1}: submit {out['submit_s']:.3f}s e2e {out['e2e_s']:.3f}s")
    return common.scenario_result(stack, ex0, s, runs, n=n)


def measure_dask(client: Any, cfg: common.Config) -> dict[str, Any]:
    s = common.Samples()
    for rep in range(cfg.repeat):
        out = dask_peer.fanout(client, cfg.fanout_n)
        s.add(submit_s=out["submit_s"], e2e_s=out["e2e_s"], tasks_per_s=cfg.fanout_n / out["e2e_s"])
        common.log(f"fanout dask rep {rep + 1}: e2e {out['e2e_s']:.3f}s")
    return s.summaries()


def report(data: dict[str, Any], cfg: common.Config) -> tuple[str, list[dict[str, Any]]]:
    cf, raw, dk = data.get("chordflow", {}), data.get("raw", {}), data.get("dask", {})
    n = data["n"]
    r_e2e = common.ratio(cf.get("e2e_s"), raw.get("e2e_s"))
    r_sub = common.ratio(cf.get("submit_s"), raw.get("submit_s"))
    ok = None if r_e2e is None else r_e2e <= 1.0
    lines = [
        f"### {TITLE}: {n:,} no-op tasks, results kept",
        "",
        "| metric | chordflow | raw Celery `group().apply_async()` + `.get()` | Dask `map`+`gather` | "
        "ratio chordflow/raw | target | result |",
        "|---|---|---|---|---|---|---|",
        f"| submission time (s) | {common.fmt(cf.get('submit_s'))} | {common.fmt(raw.get('submit_s'))} | "
        f"{common.fmt(dk.get('submit_s'))} | {_r(r_sub)} | – | – |",
        f"| end to end (s) | {common.fmt(cf.get('e2e_s'))} | {common.fmt(raw.get('e2e_s'))} | "
        f"{common.fmt(dk.get('e2e_s'))} | {_r(r_e2e)} | ≤ 1.0 | {common.status(ok)} |",
        f"| tasks/s end to end | {common.fmt(cf.get('tasks_per_s'))} | {common.fmt(raw.get('tasks_per_s'))} | "
        f"{common.fmt(dk.get('tasks_per_s'))} | {_r(common.ratio(cf.get('tasks_per_s'), raw.get('tasks_per_s')))} "
        "| – | – |",
        f"| then read all results, `Client.results` (s, not in e2e) | {common.fmt(cf.get('collect_s'))} | "
        "(in e2e: `.get()` collects) | (in e2e) | – | – | – |",
        "",
        f"Executions counted by the workers (`celery inspect stats`, all repetitions): {_ex(data)}.",
        "",
    ]
    checks = [{"scenario": NAME, "target": "fan-out end to end ratio ≤ 1.0", "value": r_e2e, "pass": ok}]
    return "\n".join(lines), checks


def _r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _ex(data: dict[str, Any]) -> str:
    ex = data.get("executed") or {}
    return "; ".join(f"{k}: {v}" for k, v in ex.items())
