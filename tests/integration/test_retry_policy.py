"""Retry policy and cancel with real workers, checked black-box (run state + the tasks' own records).

Which exceptions retry (``retry_on``, ``TransientError``, ``PermanentError``), how long the waits
between attempts are (backoff, doubling, cap; by Redis time), and that ``cancel`` terminates a
running attempt's process rather than only refusing its result.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psutil
import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from tests.conftest import run_to_end
from tests.fault_report import record
from tests.retry_tasks import (
    BACKOFF,
    backoff_probe,
    block_until_killed,
    probe_key,
    retry_on_anything,
    retry_on_connection,
)

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.parametrize(
    ("fn", "kind", "attempts", "error"),
    [
        (retry_on_connection, "connection", 3, "ConnectionError"),  # in retry_on: every attempt is used
        (retry_on_connection, "value", 1, "ValueError"),  # not in retry_on: fails at once
        (retry_on_connection, "transient", 3, "TransientError"),  # retried although not in retry_on
        (retry_on_connection, "permanent", 1, "PermanentError"),  # fails at once with two attempts left
        (retry_on_anything, "value", 3, "ValueError"),  # default retry_on: any Exception
        (retry_on_anything, "permanent", 1, "PermanentError"),  # ... but PermanentError
    ],
)
def test_which_exceptions_retry(
    fn: Any, kind: str, attempts: int, error: str, client: Client, redis_client: redis.Redis
) -> None:
    snap = run_to_end(client, Pipeline("retry-on").add_task(fn, name="t", params={"kind": kind}))
    assert snap.states == {"t": "failed"}
    assert int(snap.attempts["t"]) == attempts
    assert json.loads(snap.errors["t"])["type"] == error
    ran = redis_client.lrange(probe_key(snap.run_id, "t", "attempts"), 0, -1)
    assert ran == [str(i) for i in range(1, attempts + 1)]  # the task body really ran that often


def expected_waits() -> list[float]:
    """The policy's waits before attempts 2..n: backoff_s doubling, capped at backoff_max_s."""
    return [min(BACKOFF.backoff_s * 2**k, BACKOFF.backoff_max_s) for k in range(BACKOFF.attempts - 1)]


def test_backoff_waits_follow_the_policy(client: Client, redis_client: redis.Redis) -> None:
    assert expected_waits() == [0.5, 1.0, 1.2]  # doubling, then the cap: the test exercises both
    snap = run_to_end(client, Pipeline("backoff").add_task(backoff_probe, name="b"))
    assert snap.states == {"b": "failed"} and int(snap.attempts["b"]) == BACKOFF.attempts
    starts = [float(x) for x in redis_client.lrange(probe_key(snap.run_id, "b", "start"), 0, -1)]
    ends = [float(x) for x in redis_client.lrange(probe_key(snap.run_id, "b", "end"), 0, -1)]
    assert len(starts) == len(ends) == BACKOFF.attempts
    waits = [round(nxt - end, 3) for end, nxt in zip(ends, starts[1:], strict=False)]
    for want, got in zip(expected_waits(), waits, strict=True):
        assert abs(got - want) <= 0.1 * want + 0.3, f"waits {waits}, policy {expected_waits()}"
    record({"scenario": "retry backoff waits (s)", "expected": expected_waits(), "measured": waits})  # passed only


def test_cancel_terminates_the_running_attempt(client: Client, redis_client: redis.Redis) -> None:
    run_id = client.submit(Pipeline("cancel-kill").add_task(block_until_killed, name="blk"))
    pid_key = probe_key(run_id, "blk", "pid")
    deadline = time.monotonic() + 30
    while not redis_client.exists(pid_key):
        assert time.monotonic() < deadline, f"the task never started: {client.status(run_id).states}"
        time.sleep(0.05)
    pid = int(redis_client.get(pid_key))
    started_at = psutil.Process(pid).create_time()

    cancelled = time.monotonic()
    assert client.cancel(run_id) == "cancelled"
    while _alive(pid, started_at):
        assert time.monotonic() - cancelled < 10, f"process {pid} of the cancelled attempt still runs"
        time.sleep(0.05)
    gone_s = time.monotonic() - cancelled
    snap = client.status(run_id)
    assert snap.state == "cancelled" and snap.states["blk"] == "cancelled"
    assert not redis_client.exists(probe_key(run_id, "blk", "finished"))
    record({"scenario": "cancel terminates a running attempt", "process_gone_s": round(gone_s, 2)})  # passed only


def _alive(pid: int, created: float) -> bool:
    """Whether the process that ran the attempt still exists (not a reused pid, not a zombie)."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
