"""Scenario 7 — job latency: a web app's one-task job, from submit to "finished" known by the client.

chordflow: ``Client.submit(one-task pipeline)`` then ``Client.wait(run_id)``, which blocks on the
run's event stream (pushed by the ledger, not polled). raw Celery: ``noop.apply_async().get()`` (its
result backend pushes the result over pub/sub). Sequentially, and with 8 concurrent submitters (one
client each, threads). Latency per job in ms; p50 and p99 over all jobs of a repetition, then the
median over repetitions. When the HTTP service is available (``orchestrator.api``), also through
HTTP: ``POST /runs`` then the SSE stream until its terminal event, on loopback.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from bench import cf_tasks, common
from bench import raw_celery_app as rc

NAME = "job_latency"
TITLE = "7. Job latency"
CONCURRENT = 8


def _percentiles(ms: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": statistics.median(ms), "p99": qs[98]}


def _cf_jobs(client: Any, n: int, out: list[float]) -> None:
    pipeline = cf_tasks.one_job()
    for _ in range(n):
        t0 = time.perf_counter()
        run_id = client.submit(pipeline)
        snap = client.wait(run_id, timeout_s=60, detail=False)
        out.append((time.perf_counter() - t0) * 1e3)
        if snap.state != "succeeded":
            raise RuntimeError(f"job {run_id} ended {snap.state}")


def _raw_jobs(n: int, out: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        rc.noop.apply_async().get(timeout=60)
        out.append((time.perf_counter() - t0) * 1e3)


def _concurrent(target: Any, make_args: Any, per_thread: int) -> list[float]:
    results: list[list[float]] = [[] for _ in range(CONCURRENT)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(*make_args(i), per_thread, results[i])
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [x for r in results for x in r]


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    from orchestrator.client import Client

    n = cfg.job_n
    per_thread = max(1, n // CONCURRENT)
    clients = [Client(stack.settings()) for _ in range(CONCURRENT)]
    s = {"chordflow": common.Samples(), "raw": common.Samples()}
    ex0 = common.executed(stack)
    _cf_jobs(stack.cf_client(), 5, [])  # warm the connection pools and the scripts
    _raw_jobs(5, [])
    for rep in range(cfg.repeat):
        for system in common.alternate(rep, ["chordflow", "raw"]):
            seq: list[float] = []
            if system == "chordflow":
                _cf_jobs(stack.cf_client(), n, seq)
                conc = _concurrent(_cf_jobs, lambda i: (clients[i],), per_thread)
            else:
                _raw_jobs(n, seq)
                conc = _concurrent(_raw_jobs, lambda i: (), per_thread)
            a, b = _percentiles(seq), _percentiles(conc)
            s[system].add(seq_p50_ms=a["p50"], seq_p99_ms=a["p99"], conc_p50_ms=b["p50"], conc_p99_ms=b["p99"])
            common.log(f"job latency {system} rep {rep + 1}: sequential p50 {a['p50']:.2f} ms p99 {a['p99']:.2f} ms; "
                       f"{CONCURRENT} concurrent p50 {b['p50']:.2f} ms p99 {b['p99']:.2f} ms")  # fmt: skip
            stack.clean_artifacts()
            stack.raw_cleanup()
    http = _measure_http(stack, cfg)
    out = common.scenario_result(stack, ex0, s, {"chordflow": [], "raw": []}, n=n, concurrent=CONCURRENT)
    if http is not None:
        out["http"] = http
    return out


def _measure_http(stack: common.Stack, cfg: common.Config) -> dict[str, Any] | None:
    """POST /runs then read the SSE stream until the terminal event, through a real uvicorn on loopback."""
    try:
        from bench import http_peer
    except ImportError:
        return None
    return http_peer.measure(stack, cfg.job_n, cfg.repeat)


def report(data: dict[str, Any], cfg: common.Config) -> tuple[str, list[dict[str, Any]]]:
    cf, raw = data.get("chordflow", {}), data.get("raw", {})
    rows, checks = [], []
    for key, label, bound, target in (
        ("seq_p50_ms", "sequential p50 (ms)", 1.0, "≤ raw"),
        ("seq_p99_ms", "sequential p99 (ms)", 2.0, "≤ 2× raw"),
        ("conc_p50_ms", f"{data.get('concurrent', CONCURRENT)} concurrent submitters p50 (ms)", 1.0, "≤ raw"),
        ("conc_p99_ms", f"{data.get('concurrent', CONCURRENT)} concurrent submitters p99 (ms)", 2.0, "≤ 2× raw"),
    ):
        r = common.ratio(cf.get(key), raw.get(key))
        ok = None if r is None else r <= bound
        rows.append(f"| {label} | {common.fmt(cf.get(key))} | {common.fmt(raw.get(key))} | "
                    f"{'–' if r is None else f'{r:.2f}'} | {target} | {common.status(ok)} |")  # fmt: skip
        checks.append({"scenario": NAME, "target": f"{label} {target}", "value": r, "pass": ok})
    http = data.get("http")
    lines = [
        f"### {TITLE}: one-task job, submit to \"finished\" known by the client ({data['n']} jobs per repetition)",
        "",
        "chordflow `Client.submit` + `Client.wait` (blocks on the run's event stream) vs raw Celery "
        "`noop.apply_async().get()`; medians over repetitions of each repetition's percentile.",
        "",
        "| metric | chordflow | raw Celery | ratio chordflow/raw | target | result |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if http:
        p50 = http["p50_ms"]
        ok = p50["median"] <= 15.0
        lines += [
            f"Through HTTP (`POST /runs`, then `GET /runs/{{id}}/events` until the terminal event; uvicorn on "
            f"loopback): p50 {common.fmt(p50)} ms, p99 {common.fmt(http['p99_ms'])} ms (target p50 ≤ 15 ms: "
            f"{common.status(ok)}).",
            "",
        ]
        checks.append({"scenario": NAME, "target": "HTTP POST→SSE terminal p50 ≤ 15 ms", "value": p50["median"],
                       "pass": ok})  # fmt: skip
    return "\n".join(lines), checks
