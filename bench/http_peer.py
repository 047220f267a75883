"""Job latency through HTTP: ``POST /runs`` of a published one-task pipeline, then its SSE stream until
the terminal ``run`` event, against a real ``chordflow serve`` (uvicorn) on loopback.

Used by :mod:`bench.job_latency`; the service runs against the bench's Redis and chordflow worker.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from bench import cf_tasks, common
from orchestrator.embedded import die_with_parent, free_port, terminate_group
from orchestrator.states import TERMINAL_RUN_STATES

TOKEN = "bench-" + "b" * 26


def _serve(stack: common.Stack) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, **stack.cf_worker_env(), "CHORDFLOW_REDIS_URL": stack.cf_url, "CHORDFLOW_API_TOKEN": TOKEN,
           "PYTHONPATH": str(common.REPO), "CHORDFLOW_USE_CACHE": "false"}  # fmt: skip
    with open(stack.tmp / "logs" / "serve.log", "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(port)],
            env=env, cwd=common.REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chordflow serve exited; see {stack.tmp / 'logs' / 'serve.log'}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    terminate_group(proc, grace_s=5)
    raise RuntimeError("chordflow serve did not come up")


def _job(http: httpx.Client) -> float:
    t0 = time.perf_counter()
    resp = http.post("/runs", json={"pipeline": "job"}, headers={"Authorization": f"Bearer {TOKEN}"})
    if resp.status_code != 201:
        raise RuntimeError(f"POST /runs: {resp.status_code} {resp.text[:300]}")
    event = ""
    with http.stream("GET", f"/runs/{resp.json()['run_id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "run" and any(f'"{s}"' in line for s in TERMINAL_RUN_STATES):
                break
    return (time.perf_counter() - t0) * 1e3


def measure(stack: common.Stack, n: int, repeat: int) -> dict[str, Any]:
    from orchestrator.registry import Registry, describe

    client = stack.cf_client()
    pipeline = cf_tasks.one_job()
    Registry(client.store.r).publish(describe(pipeline, client.plan(pipeline)))
    proc, url = _serve(stack)
    p50, p99 = common.Samples(), common.Samples()
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(5):
                _job(http)  # warm the connection and the service's clients
            for rep in range(repeat):
                ms = [_job(http) for _ in range(n)]
                qs = statistics.quantiles(ms, n=100, method="inclusive")
                p50.add(v=statistics.median(ms))
                p99.add(v=qs[98])
                common.log(f"job latency HTTP rep {rep + 1}: p50 {statistics.median(ms):.2f} ms p99 {qs[98]:.2f} ms")
                stack.clean_artifacts()
    finally:
        terminate_group(proc, grace_s=5)
    return {"p50_ms": p50.summaries()["v"], "p99_ms": p99.summaries()["v"], "n": n}
