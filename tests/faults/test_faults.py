"""Fault injection over real Redis and real Celery workers (RELIABILITY.md section 4).

Each scenario runs a no-fault control, then the fault, and prints one
``FAULT {json}`` line with the figures: lost (nodes not terminal),
extra_exec (starts beyond one per node), double_trigger (unfaulted nodes
started more than once). The bar: lost = 0 and double_trigger = 0.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis

from orchestrator import Pipeline, keys
from orchestrator.client import Client
from orchestrator.keys import run_keys
from tests.fault_tasks import bad_result, block, hang, leak, leaky, long, poison
from tests.faults.conftest import LEASE_S, REAPER_S, FaultWorkers, figures, in_flight, probe_events, wait_for_event

#: Recovery bound: a lease, a reaper sweep, and a few seconds of scheduling on a busy 2-core machine. The broker's
#: visibility timeout is an hour (FAULT_ENV), so only chordflow's own mechanisms can meet it.
RECOVER_BOUND_S = LEASE_S + REAPER_S + 4

pytestmark = pytest.mark.usefixtures("worker")


def _wait(client: Client, run_id: str, timeout_s: float = 60):
    snap = client.wait(run_id, timeout_s=timeout_s, poll_s=0.05)
    assert snap.finished, f"hang: {run_id} still {snap.state} {snap.states}"
    return snap


def _pair(flag: str) -> Pipeline:
    return (
        Pipeline("fault")
        .add_task(block, name="victim", params={"flag": flag})
        .add_task(block, name="down", depends_on=["victim"])
        .add_task(block, name="sibling", params={"seconds": 0.1})
    )


@pytest.fixture(scope="module")
def w1(fault_workers: FaultWorkers) -> FaultWorkers:
    fault_workers.start("w1", concurrency=2)
    return fault_workers


def test_control_run_counts_zero(w1: FaultWorkers, client: Client, redis_client: redis.Redis) -> None:
    """No fault: the counters read zero (so they can count)."""
    flag = f"tests:flag:{uuid.uuid4().hex}"
    redis_client.set(flag, 1)
    run_id = client.submit(_pair(flag))
    snap = _wait(client, run_id)
    fig = figures(client, redis_client, run_id, "control", faulted=set())
    assert snap.state == "succeeded" and fig["lost"] == 0 and fig["extra_exec"] == 0 and fig["double_trigger"] == 0


def test_1_pool_child_killed_mid_task(w1: FaultWorkers, client: Client, redis_client: redis.Redis) -> None:
    """SIGKILL of the pool process running a task: requeued (attempt 2, worker_lost), downstream once."""
    flag = f"tests:flag:{uuid.uuid4().hex}"
    run_id = client.submit(_pair(flag))
    start = wait_for_event(redis_client, run_id, "victim", "start")
    os.kill(int(start["pid"]), signal.SIGKILL)
    t_fault = client.store.now()
    redis_client.set(flag, 1)
    snap = _wait(client, run_id)
    second = [e for e in probe_events(redis_client, run_id) if e["task"] == "victim" and e["phase"] == "start"][-1]
    fig = figures(client, redis_client, run_id, "1 pool child killed", faulted={"victim"},
                  recover_s=round(float(second["at"]) - t_fault, 3))  # fmt: skip
    assert snap.state == "succeeded", snap.states
    assert fig["recover_s"] < RECOVER_BOUND_S
    assert fig["lost"] == 0 and fig["double_trigger"] == 0 and fig["extra_exec"] == 1
    assert snap.attempts["victim"] == "2"
    log = client.store.attempt_log(run_id)
    # noticed by the worker's main process (worker_lost) or, if the lease ran out first, by the reaper
    assert any(e["task"] == "victim" and e["outcome"] in ("worker_lost", "lost") for e in log)


def test_5_poison_task_is_capped_then_fails_worker_lost(
    w1: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """A task that kills its own process every time: max_worker_lost (2) requeues, then failed; no loop."""
    p = (
        Pipeline("poison")
        .add_task(poison)
        .add_task(block, name="after", depends_on=["poison"])
        .add_task(block, name="sibling", params={"seconds": 0.2})
    )
    t0 = time.monotonic()
    run_id = client.submit(p)
    snap = _wait(client, run_id)
    executions = sum(1 for e in probe_events(redis_client, run_id) if e["task"] == "poison")
    fig = figures(client, redis_client, run_id, "5 poison task", faulted={"poison"},
                  poison_executions=executions, run_end_s=round(time.monotonic() - t0, 3))  # fmt: skip
    assert fig["run_end_s"] < 3 * RECOVER_BOUND_S
    assert snap.state == "failed"
    assert snap.states == {"poison": "failed", "after": "upstream_failed", "sibling": "succeeded"}
    assert executions == 3  # cap (2) + 1
    assert json.loads(snap.errors["poison"])["reason"] == "worker_lost"
    assert fig["lost"] == 0 and fig["double_trigger"] == 0


def test_7_hang_past_hard_timeout_fails_with_reason_timeout(
    w1: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """Soft limit raises (ignored by the task), hard limit kills it: failed/timeout; worker keeps going."""
    run_id = client.submit(Pipeline("hang").add_task(hang).add_task(block, name="after", depends_on=["hang"]))
    start = wait_for_event(redis_client, run_id, "hang", "start")
    snap = _wait(client, run_id)
    finished = float(snap.times["hang:finished"])
    fig = figures(client, redis_client, run_id, "7 hang past hard timeout", faulted={"hang"},
                  hard_limit_to_failed_s=round(finished - float(start["at"]) - 2.0, 3))  # fmt: skip
    assert snap.states == {"hang": "failed", "after": "upstream_failed"}
    assert json.loads(snap.errors["hang"])["reason"] == "timeout"
    assert fig["hard_limit_to_failed_s"] < 3
    assert any(e["task"] == "hang" and e["phase"] == "soft_limit" for e in probe_events(redis_client, run_id))
    assert fig["lost"] == 0
    # And the worker keeps consuming
    flag = f"tests:flag:{uuid.uuid4().hex}"
    redis_client.set(flag, 1)
    assert _wait(client, client.submit(_pair(flag))).state == "succeeded"


def test_9_healthy_task_longer_than_visibility_timeout_runs_once(
    w1: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """12 s task, 10 s visibility timeout: the broker redelivers, the lease stops a second execution."""
    # A worker whose restore sweep uses a 10 s visibility timeout makes the broker redeliver (the fault)
    short = {"CHORDFLOW_VISIBILITY_TIMEOUT_S": "10", "CHORDFLOW_RESTORE_INTERVAL_S": "1"}
    w1.start("wv", concurrency=1, env=short)
    try:
        run_id = client.submit(Pipeline("long").add_task(long, params={"seconds": 12}).add_task(
            block, name="after", depends_on=["long"]))  # fmt: skip
        snap = _wait(client, run_id, timeout_s=90)
    finally:
        w1.procs.pop("wv").stop(grace_s=5)
    logs = "".join((w1.artifact_root / "logs" / f"{n}.log").read_text(errors="replace") for n in ("w1", "wv"))
    redelivered = sum(1 for line in logs.splitlines() if run_id in line and "task.duplicate_delivery" in line)
    fig = figures(client, redis_client, run_id, "9 task longer than visibility timeout", faulted=set(),
                  redeliveries_seen=redelivered)  # fmt: skip
    assert redelivered >= 1  # the broker did redeliver: the fault happened
    assert snap.state == "succeeded"
    assert fig["extra_exec"] == 0 and fig["double_trigger"] == 0 and fig["lost"] == 0


def test_3_whole_worker_killed_and_restarted(w1: FaultWorkers, client: Client, redis_client: redis.Redis) -> None:
    """Every worker SIGKILLed mid-task, a new one started 2 s later: the lease reaper reruns the task."""
    flag = f"tests:flag:{uuid.uuid4().hex}"
    run_id = client.submit(_pair(flag))
    wait_for_event(redis_client, run_id, "victim", "start")
    w1.kill("w1")
    t_fault = client.store.now()
    hit = in_flight(redis_client, run_id)  # everything running on the killed worker
    redis_client.set(flag, 1)
    time.sleep(2)
    t_restart = client.store.now()  # the new worker starts now; the victim's lease has long expired
    w1.start("w1", concurrency=2)
    snap = _wait(client, run_id, timeout_s=60)
    second = [e for e in probe_events(redis_client, run_id) if e["task"] == "victim" and e["phase"] == "start"][-1]
    fig = figures(client, redis_client, run_id, "3 all workers killed, restarted", faulted=hit,
                  recover_s=round(float(second["at"]) - t_fault, 3),
                  from_restart_s=round(float(second["at"]) - t_restart, 3))  # fmt: skip
    assert snap.state == "succeeded", snap.states
    assert fig["lost"] == 0 and fig["double_trigger"] == 0
    assert 0 < fig["from_restart_s"] < RECOVER_BOUND_S + 10  # a worker start (~1-3 s) + its first reaper sweep


def test_late_result_of_a_presumed_lost_attempt_is_refused(client: Client, redis_client: redis.Redis) -> None:
    """Idempotent completion: a settle by an attempt that no longer holds the lease changes nothing."""
    from tests.integration.test_engine import _create_undispatched

    run_id = _create_undispatched(client, Pipeline("late").add_task(block, name="x"))
    redis_client.hset(run_keys(run_id).state, "x", "queued")
    first = client.store.begin(run_id, "x", "h1", 1, "tok1", "t1")  # 1 ms lease: expires at once
    time.sleep(0.01)
    second = client.store.begin(run_id, "x", "h2", 60_000, "tok2", "t2")
    assert first.status == second.status == "run" and second.attempt == 2
    assert client.store.succeed(run_id, "x", "tok1", '{"v": 1}', "{}") == "stale"
    assert client.store.succeed(run_id, "x", "tok2", '{"v": 2}', "{}") == "ok"
    assert client.store.succeed(run_id, "x", "tok2", '{"v": 3}', "{}") == "dup"
    assert client.results(run_id) == {"x": {"v": 2}}


def test_22_non_json_result_fails_without_retry(w1: FaultWorkers, client: Client, redis_client: redis.Redis) -> None:
    run_id = client.submit(
        Pipeline("bad").add_task(bad_result).add_task(block, name="after", depends_on=["bad_result"])
    )
    snap = _wait(client, run_id)
    figures(client, redis_client, run_id, "22 bad result", faulted=set())
    assert snap.states == {"bad_result": "failed", "after": "upstream_failed"}
    assert snap.attempts["bad_result"] == "1"
    assert "not JSON-serialisable" in json.loads(snap.errors["bad_result"])["message"]


def test_28_secrets_are_scrubbed_from_every_sink(
    w1: FaultWorkers, client: Client, redis_client: redis.Redis, artifact_root: Path
) -> None:
    """A failing task whose exception message contains its secret params: the canary appears nowhere."""
    canary, pw = f"s3cr3t-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    run_id = client.submit(Pipeline("leak").add_task(leaky, params={"api_token": canary,
                                                                     "dsn": f"postgres://app:{pw}@db/x"}))  # fmt: skip
    snap = _wait(client, run_id)
    assert snap.states == {"leaky": "failed"}
    sinks = {
        "failed_tasks.log": (artifact_root / "failed_tasks.log").read_text(),
        "error report": "".join(p.read_text() for p in (artifact_root / "errors" / run_id).glob("*.json")),
        "worker log": (artifact_root / "logs" / "w1.log").read_text(errors="replace"),
        "redis errors+attempt log": json.dumps(
            [redis_client.hgetall(run_keys(run_id).errors), redis_client.lrange(run_keys(run_id).attempt_log, 0, -1)]
        ),
    }
    hits = {name: (canary in text or pw in text) for name, text in sinks.items()}
    figures(client, redis_client, run_id, "28 secret redaction", faulted=set(), canary_hits=sum(hits.values()))
    assert "***" in sinks["error report"]
    assert not any(hits.values()), hits


def test_2_whole_worker_killed_during_200_task_fan_out(
    w1: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """Two workers; one SIGKILLed (whole process group) after 50 of 200 chunks: the other finishes, reduce once."""
    w1.start("w2", concurrency=2)
    p = Pipeline("fan").add_task(block, name="split", params={"seconds": 0})
    for i in range(200):
        p.add_task(block, name=f"chunk{i:03d}", depends_on=["split"], params={"seconds": 0.03})
    p.add_task(block, name="reduce", depends_on=[f"chunk{i:03d}" for i in range(200)])
    run_id = client.submit(p)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = sum(1 for e in probe_events(redis_client, run_id) if e["phase"] == "end" and e["task"] != "split")
        if done >= 50:
            break
        time.sleep(0.01)
    w1.kill("w1")
    t_fault = client.store.now()
    hit = in_flight(redis_client, run_id)
    snap = _wait(client, run_id, timeout_s=90)
    events = probe_events(redis_client, run_id)
    reduce_starts = [e for e in events if e["task"] == "reduce" and e["phase"] == "start"]
    # each node the kill hit that had not settled starts again: how long after the kill did the last one start?
    later = [e for e in events if e["phase"] == "start" and float(e["at"]) > t_fault]
    restarts = [min(float(e["at"]) for e in later if e["task"] == t) for t in hit if any(e["task"] == t for e in later)]
    fig = figures(client, redis_client, run_id, "2 whole worker killed during 200-chunk fan-out", faulted=hit,
                  in_flight_at_kill=len(hit), restarted=len(restarts),
                  recover_s=round(max(restarts) - t_fault, 3) if restarts else None,
                  run_end_after_kill_s=round(float(snap.meta["finished_at"]) - t_fault, 3))  # fmt: skip
    w1.start("w1", concurrency=2)  # the module's other tests expect w1
    w1.procs.pop("w2").stop(grace_s=5)
    assert snap.state == "succeeded", snap.counts()
    assert fig["lost"] == 0 and fig["double_trigger"] == 0 and len(reduce_starts) == 1
    assert fig["recover_s"] is None or fig["recover_s"] < RECOVER_BOUND_S  # None: the kill hit nothing unsettled
    assert fig["run_end_after_kill_s"] < 30


def test_4_graceful_stop_mid_task_finishes_the_task(
    w1: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """SIGTERM (warm shutdown) while a task runs: it finishes, nothing is lost; a new worker continues."""
    flag = f"tests:flag:{uuid.uuid4().hex}"
    run_id = client.submit(_pair(flag))
    wait_for_event(redis_client, run_id, "victim", "start")
    w = w1.procs.pop("w1")
    t0 = time.monotonic()
    os.kill(w.proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    redis_client.set(flag, 1)
    w.proc.wait(30)
    shutdown_s = time.monotonic() - t0
    w1.start("w1", concurrency=2)
    snap = _wait(client, run_id)
    fig = figures(client, redis_client, run_id, "4 graceful stop mid-task", faulted=set(),
                  shutdown_s=round(shutdown_s, 3))  # fmt: skip
    assert snap.state == "succeeded"
    assert fig["lost"] == 0 and fig["extra_exec"] == 0 and fig["double_trigger"] == 0


def test_6_leaking_task_fails_and_the_pool_keeps_serving(
    w1: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """A task that exhausts its memory limit fails with MemoryError; the next task on that worker runs normally."""
    run_id = client.submit(Pipeline("leak").add_task(leak).add_task(block, name="after", depends_on=["leak"]))
    snap = _wait(client, run_id)
    assert snap.states == {"leak": "failed", "after": "upstream_failed"}
    assert json.loads(snap.errors["leak"])["type"] == "MemoryError"
    t0 = time.monotonic()
    next_run = client.submit(Pipeline("after-leak").add_task(block, name="x"))
    assert _wait(client, next_run).state == "succeeded"
    latency = time.monotonic() - t0
    rss_mb = sum(p.memory_info().rss for p in [psutil.Process(w1.procs["w1"].proc.pid)]
                 + psutil.Process(w1.procs["w1"].proc.pid).children()) / 1e6  # fmt: skip
    fig = figures(client, redis_client, run_id, "6 leaking task", faulted={"leak"},
                  next_task_s=round(latency, 3), worker_rss_mb=round(rss_mb, 1))  # fmt: skip
    assert fig["lost"] == 0 and latency < 10 and rss_mb < 1000


def test_resent_begin_and_defer_are_idempotent(client: Client, redis_client: redis.Redis) -> None:
    """redis-py re-sends a script whose reply was lost: the second begin/defer must change nothing."""
    from tests.integration.test_engine import _create_undispatched

    run_id = _create_undispatched(client, Pipeline("resend").add_task(block, name="x"))
    redis_client.hset(run_keys(run_id).state, "x", "queued")
    first = client.store.begin(run_id, "x", "h", 60_000, "tok", "t")
    again = client.store.begin(run_id, "x", "h", 60_000, "tok", "t")
    assert first.status == again.status == "run" and first.attempt == again.attempt == 1
    assert client.store.defer(run_id, "x", "tok", "{}", "{}", 60) == "ok"
    assert client.store.defer(run_id, "x", "tok", "{}", "{}", 60) == "ok"  # re-sent: still ours, still ok
    assert client.status(run_id).states["x"] == "retrying" and client.status(run_id).attempts["x"] == "1"
    assert client.store.defer(run_id, "x", "other", "{}", "{}", 60) == "stale"
    assert redis_client.zscore(keys.DUE, keys.due_member(run_id, "x")) is not None  # the retry waits in the due index
    client.cancel(run_id)  # nothing is left scheduled for later tests
    assert redis_client.zscore(keys.DUE, keys.due_member(run_id, "x")) is None


def test_reaper_redispatches_a_node_whose_message_was_lost(client: Client, redis_client: redis.Redis) -> None:
    """Safety net: a node queued with no message anywhere (a publish failed) is dispatched again."""
    from tests.integration.test_engine import _create_undispatched
    from tests.pipelines import noop

    run_id = _create_undispatched(client, Pipeline("lost-msg").add_task(noop, name="orphan"))
    k = run_keys(run_id)
    redis_client.hset(k.state, "orphan", "queued")  # the ledger moved on, the message never made it
    redis_client.zadd(k.waiting, {"orphan": 1})  # queued since long ago
    assert client.store.reap(run_id, 2, stale_ms=60_000) == 1
    snap = client.wait(run_id, timeout_s=30, poll_s=0.05)
    assert snap.state == "succeeded" and snap.attempts["orphan"] == "1"
    assert redis_client.zcard(k.waiting) == 0


def test_message_lost_between_pop_and_unacked_is_dispatched_again(client: Client, redis_client: redis.Redis) -> None:
    """kombu pops a message before it records it as unacked: a worker killed in between loses it. A node
    queued longer than the check interval whose message is neither reserved nor queued is dispatched again."""
    from orchestrator.keys import KOMBU_UNACKED
    from tests.integration.test_engine import _create_undispatched
    from tests.unregistered_tasks import nowhere  # queue 'nobody': no worker takes the message away

    run_id = _create_undispatched(client, Pipeline("lost-pop").add_task(nowhere, name="n"))
    client.store.dispatch(run_id, ["n"])
    k = run_keys(run_id)
    tid = redis_client.hget(k.task_ids, "n")
    mine = [m for m in redis_client.lrange("nobody", 0, -1) if tid in m]
    assert len(mine) == 1
    redis_client.zadd(k.waiting, {"n": 1})  # queued long ago
    # While the message is in its queue, or reserved by a worker, nothing happens
    assert client.store.reap(run_id, 2, stale_ms=3_600_000, lost_ms=1000) == 0
    redis_client.lrem("nobody", 0, mine[0])
    redis_client.hset(KOMBU_UNACKED, tid, json.dumps([json.loads(mine[0]), "", "nobody"]))
    redis_client.zadd(k.waiting, {"n": 1})
    assert client.store.reap(run_id, 2, stale_ms=3_600_000, lost_ms=1000) == 0
    # When it is nowhere (popped, never recorded), it is dispatched again at once, not after the 1 h timeout
    redis_client.hdel(KOMBU_UNACKED, tid)
    redis_client.zadd(k.waiting, {"n": 1})
    assert client.store.reap(run_id, 2, stale_ms=3_600_000, lost_ms=1000) == 1
    again = [m for m in redis_client.lrange("nobody", 0, -1) if run_id in m]
    assert len(again) == 1 and redis_client.hget(k.task_ids, "n") != tid
    assert any(e.get("reason") == "message_lost" for e in client.store.attempt_log(run_id))
    client.cancel(run_id)
    redis_client.lrem("nobody", 0, again[0])
