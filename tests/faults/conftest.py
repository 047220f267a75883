"""Fault-suite harness: its own Celery workers (queue ``faults``) with short timings, and the figures."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess
from orchestrator.keys import run_keys
from orchestrator.states import TERMINAL_TASK_STATES
from tests.conftest import REPO
from tests.fault_report import record
from tests.fault_tasks import QUEUE, probe_stream

LEASE_S = 1.5
REAPER_S = 0.5
#: The broker's visibility timeout is production's (1 h), far above every bound below: recovery must come
#: from chordflow's leases, liveness and reaper, never from the broker redelivering after a timeout.
FAULT_ENV = {
    "CHORDFLOW_TASK_MODULES": "tests.fault_tasks,tests.pipelines",
    "CHORDFLOW_VISIBILITY_TIMEOUT_S": "3600",
    "CHORDFLOW_RESTORE_INTERVAL_S": "1",
    "CHORDFLOW_LEASE_S": str(LEASE_S),
    "CHORDFLOW_REAPER_INTERVAL_S": str(REAPER_S),
    "CHORDFLOW_MAX_WORKER_LOST": "2",
    "CHORDFLOW_TASK_EVENTS": "false",
    "C_FORCE_ROOT": "1",
}


class FaultWorkers:
    """Start/kill/restart real fault-queue workers; each in its own process group."""

    def __init__(self, redis_server: RedisServer, artifact_root: Path) -> None:
        self.redis_server = redis_server
        self.artifact_root = artifact_root
        self.procs: dict[str, WorkerProcess] = {}

    def start(
        self, name: str, concurrency: int = 1, queues: list[str] | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        env = {**FAULT_ENV, "CHORDFLOW_ARTIFACT_ROOT": str(self.artifact_root), **(env or {})}
        w = WorkerProcess(self.redis_server.url, f"{name}@%h", concurrency, queues or [QUEUE],
                          self.artifact_root / "logs" / f"{name}.log", extra_env=env, cwd=REPO).start()  # fmt: skip
        self.procs[name] = w
        self._wait_ready(w)
        return w

    def _wait_ready(self, w: WorkerProcess, timeout_s: float = 30) -> None:
        """Ready = its pool processes exist (so a kill lands on a worker that consumes)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert w.alive, w.log_path.read_text()[-2000:]
            text = w.log_path.read_text(errors="replace") if w.log_path.exists() else ""
            if "ready." in text.split("celery@")[-1] or len(psutil.Process(w.proc.pid).children()) >= w.concurrency:
                time.sleep(0.5)
                return
            time.sleep(0.1)
        raise AssertionError("fault worker did not start")

    def kill(self, name: str) -> None:
        w = self.procs.pop(name)
        os.killpg(os.getpgid(w.proc.pid), signal.SIGKILL)
        w.proc.wait(10)

    def stop_all(self) -> None:
        for w in self.procs.values():
            w.stop(grace_s=5)
        self.procs.clear()


@pytest.fixture(scope="module")
def fault_workers(redis_server: RedisServer, artifact_root: Path) -> Iterator[FaultWorkers]:
    fw = FaultWorkers(redis_server, artifact_root)
    yield fw
    fw.stop_all()


def probe_events(r: redis.Redis, run_id: str) -> list[dict[str, str]]:
    return [fields for _, fields in r.xrange(probe_stream(run_id))]


def in_flight(r: redis.Redis, run_id: str) -> set[str]:
    """Tasks a fault right now hits: started and not ended, or ended but not yet settled in the ledger."""
    started, ended = set(), set()
    for e in probe_events(r, run_id):
        (started if e["phase"] == "start" else ended).add(e["task"])
    running = {n for n, s in r.hgetall(run_keys(run_id).state).items() if s == "running"}
    return (started - ended) | running


def wait_for_event(r: redis.Redis, run_id: str, task: str, phase: str, timeout_s: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for e in probe_events(r, run_id):
            if e["task"] == task and e["phase"] == phase:
                return e
        time.sleep(0.02)
    raise AssertionError(f"{task} never reached {phase}")


def figures(
    client: Client, r: redis.Redis, run_id: str, scenario: str, faulted: set[str], **extra: Any
) -> dict[str, Any]:
    """The fault figures of one run, printed as one ``FAULT {json}`` line."""
    snap = client.status(run_id)
    starts = Counter(e["task"] for e in probe_events(r, run_id) if e["phase"] == "start")
    nodes = list(snap.states)
    fig = {
        "scenario": scenario,
        "run_id": run_id,
        "state": snap.state,
        "nodes": len(nodes),
        "lost": sum(1 for s in snap.states.values() if s not in TERMINAL_TASK_STATES),
        "extra_exec": sum(starts.values()) - len(starts),
        "extra_exec_unfaulted": sum(c - 1 for t, c in starts.items() if t not in faulted and c > 1),
        "double_trigger": sum(1 for t, c in starts.items() if t not in faulted and c > 1),
        **extra,
    }  # fmt: skip
    return record(fig)
