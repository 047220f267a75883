"""Scenario 2 — chain: N no-op tasks in sequence; ms per hop = end to end / N.

chordflow: a linear pipeline (compiled into Celery chains of at most ``max_chain`` = 8 nodes,
joined by the ledger). raw Celery: ``chain(noop.si() x N).apply_async().get()``.
Dask: N futures each depending on the previous one, then ``.result()`` of the last.
"""

from __future__ import annotations

from typing import Any

from bench import cf_tasks, common, dask_peer
from bench import raw_celery_app as rc

NAME = "chain"
TITLE = "2. Chain"


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    n = cfg.chain_n
    pipeline = cf_tasks.chain(n)
    s = {"chordflow": common.Samples(), "raw": common.Samples()}
    runs: dict[str, list[dict[str, Any]]] = {"chordflow": [], "raw": []}
    ex0 = common.executed(stack)
    for rep in range(cfg.repeat):
        for system in common.alternate(rep, ["chordflow", "raw"]):
            if system == "chordflow":
                out = common.cf_run(stack, pipeline)
            else:
                out = common.raw_run(stack, rc.chain_of(n), n)
            s[system].add(submit_s=out["submit_s"], e2e_s=out["e2e_s"], ms_per_hop=out["e2e_s"] * 1e3 / n)
            runs[system].append(out)
            common.log(f"chain {n} {system} rep {rep + 1}: {out['e2e_s'] * 1e3 / n:.2f} ms/hop")
    return common.scenario_result(stack, ex0, s, runs, n=n)


def measure_dask(client: Any, cfg: common.Config) -> dict[str, Any]:
    s = common.Samples()
    for _ in range(cfg.repeat):
        out = dask_peer.chain(client, cfg.chain_n)
        s.add(e2e_s=out["e2e_s"], ms_per_hop=out["e2e_s"] * 1e3 / cfg.chain_n)
    return s.summaries()


def report(data: dict[str, Any], cfg: common.Config) -> tuple[str, list[dict[str, Any]]]:
    cf, raw, dk = data.get("chordflow", {}), data.get("raw", {}), data.get("dask", {})
    r_hop = common.ratio(cf.get("ms_per_hop"), raw.get("ms_per_hop"))
    ok = None if r_hop is None else r_hop <= 1.2
    lines = [
        f"### {TITLE}: {data['n']} no-op tasks in sequence",
        "",
        "| metric | chordflow | raw Celery `chain(noop.si() ...)` | Dask futures chain | ratio chordflow/raw | "
        "target | result |",
        "|---|---|---|---|---|---|---|",
        f"| ms per hop | {common.fmt(cf.get('ms_per_hop'))} | {common.fmt(raw.get('ms_per_hop'))} | "
        f"{common.fmt(dk.get('ms_per_hop'))} | {_r(r_hop)} | ≤ 1.2 | {common.status(ok)} |",
        f"| end to end (s) | {common.fmt(cf.get('e2e_s'))} | {common.fmt(raw.get('e2e_s'))} | "
        f"{common.fmt(dk.get('e2e_s'))} | {_r(common.ratio(cf.get('e2e_s'), raw.get('e2e_s')))} | – | – |",
        f"| submission time (s) | {common.fmt(cf.get('submit_s'))} | {common.fmt(raw.get('submit_s'))} | – | "
        f"{_r(common.ratio(cf.get('submit_s'), raw.get('submit_s')))} | – | – |",
        "",
        "Executions counted by the workers (all repetitions): "
        + "; ".join(f"{k}: {v}" for k, v in (data.get("executed") or {}).items())
        + ".",
        "",
    ]
    return "\n".join(lines), [{"scenario": NAME, "target": "chain ms/hop ratio ≤ 1.2", "value": r_hop, "pass": ok}]


def _r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"
