"""Redis faults (RELIABILITY #10, #11, #13): each on a dedicated Redis, since the test restarts or fills it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from orchestrator import Pipeline, keys
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess
from orchestrator.errors import RedisMisconfigured, RedisUnavailable, RunStateLost
from orchestrator.settings import Settings
from tests.conftest import REPO
from tests.fault_tasks import QUEUE, block
from tests.faults.conftest import FAULT_ENV, figures, probe_events, record, wait_for_event


def _stack(tmp: Path, appendonly: bool) -> tuple[RedisServer, WorkerProcess, Client]:
    server = RedisServer(tmp / "redis", appendonly=appendonly).start()
    env = {**FAULT_ENV, "CHORDFLOW_ARTIFACT_ROOT": str(tmp / "artifacts")}
    worker = WorkerProcess(server.url, "rw@%h", 2, [QUEUE], tmp / "worker.log", extra_env=env, cwd=REPO).start()
    client = Client(Settings(redis_url=SecretStr(server.url), artifact_root=tmp / "artifacts"))
    return server, worker, client


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RedisServer, WorkerProcess, Client]]:
    server, worker, client = _stack(tmp_path, appendonly=getattr(request, "param", True))
    yield server, worker, client
    worker.stop(grace_s=5)
    server.stop()


def _chain(flag: str) -> Pipeline:
    return (
        Pipeline("redis-fault")
        .add_task(block, name="first", params={"flag": flag})
        .add_task(block, name="second", depends_on=["first"])
        .add_task(block, name="third", depends_on=["second"])
    )


def test_10_redis_restart_with_aof_mid_run(stack) -> None:
    """Redis stops mid-task and comes back on the same port: workers reconnect by themselves, run completes."""
    server, worker, client = stack
    r = redis.Redis.from_url(server.url, decode_responses=True)
    flag = f"tests:flag:{uuid.uuid4().hex}"
    run_id = client.submit(_chain(flag))
    wait_for_event(r, run_id, "first", "start")
    worker_pid = worker.proc.pid
    server.stop()  # SIGTERM: Redis writes its AOF and exits
    t_fault = time.time()
    time.sleep(3)
    server.start(keep_port=True)
    r = redis.Redis.from_url(server.url, decode_responses=True)
    r.set(flag, 1)
    snap = client.wait(run_id, timeout_s=60, poll_s=0.1)
    starts = [e for e in probe_events(r, run_id) if e["phase"] == "start" and e["task"] == "second"]
    fig = figures(client, r, run_id, "10 Redis restart (AOF)", faulted={"first"},
                  recover_s=round(float(starts[0]["at"]) - t_fault, 3) if starts else None,
                  workers_restarted=0 if worker.alive and worker.proc.pid == worker_pid else 1)  # fmt: skip
    assert snap.state == "succeeded", snap.states
    assert fig["lost"] == 0 and fig["double_trigger"] == 0 and fig["workers_restarted"] == 0
    assert fig["recover_s"] is not None and fig["recover_s"] < 3 + 10  # 3 s of downtime + reconnect


@pytest.mark.parametrize("stack", [False], indirect=True)
def test_11_redis_killed_without_persistence_is_detected_not_a_hang(stack) -> None:
    """kill -9 of a Redis with no persistence: the waiting client says state_lost instead of hanging."""
    server, worker, client = stack
    r = redis.Redis.from_url(server.url, decode_responses=True)
    flag = f"tests:flag:{uuid.uuid4().hex}"
    run_id = client.submit(_chain(flag))
    wait_for_event(r, run_id, "first", "start")
    outcome: list[BaseException | object] = []

    def watch() -> None:  # a client already waiting on the run, as `chordflow run` would be
        try:
            outcome.append(client.wait(run_id, timeout_s=30, poll_s=0.1))
        except Exception as exc:
            outcome.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.5)
    server.kill()
    t_fault = time.monotonic()
    server.start(keep_port=True)
    watcher.join(40)
    detect_s = time.monotonic() - t_fault
    assert len(outcome) == 1 and isinstance(outcome[0], RunStateLost), outcome
    assert "state_lost" in str(outcome[0])
    r.set(flag, 1)  # the orphaned task finishes; the worker must shrug it off and stay up
    time.sleep(1)
    record({"scenario": "11 Redis SIGKILL without persistence", "detect_s": round(detect_s, 3),
            "client_outcome": type(outcome[0]).__name__})  # fmt: skip
    assert detect_s < 15 and worker.alive


def test_13_full_redis_fails_submit_fast_and_leaves_nothing(stack) -> None:
    server, worker, client = stack
    r = redis.Redis.from_url(server.url, decode_responses=True)
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", used + 256 * 1024)
    big = Pipeline("big")
    for i in range(5000):
        big.add_task(block, name=f"n{i}", params={"seconds": 0})
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailable, match="out of memory"):
        client.submit(big)
    elapsed = time.monotonic() - t0
    r.config_set("maxmemory", 0)
    orphans = [k for k in r.scan_iter(f"{keys.PREFIX}:run:*") if r.type(k) == "hash" and r.hget(k, "state")]
    record({"scenario": "13 Redis full", "time_to_error_s": round(elapsed, 3), "orphaned_runs": len(orphans)})
    assert orphans == [] and r.scard(keys.ACTIVE_RUNS) == 0 and elapsed < 5


def test_evicting_redis_is_refused_by_client_and_worker(stack, tmp_path: Path) -> None:
    server, worker, client = stack
    r = redis.Redis.from_url(server.url, decode_responses=True)
    r.config_set("maxmemory-policy", "allkeys-lru")
    fresh = Client(client.settings)
    with pytest.raises(RedisMisconfigured, match="maxmemory-policy is allkeys-lru"):
        fresh.submit(Pipeline("x").add_task(block))
    env = {**FAULT_ENV, "CHORDFLOW_ARTIFACT_ROOT": str(tmp_path / "a2")}
    refused = WorkerProcess(server.url, "refused@%h", 1, [QUEUE], tmp_path / "refused.log", extra_env=env, cwd=REPO)
    refused.start()
    refused.proc.wait(30)
    assert refused.proc.returncode != 0
    assert "maxmemory-policy is allkeys-lru" in (tmp_path / "refused.log").read_text()
    r.config_set("maxmemory-policy", "noeviction")
