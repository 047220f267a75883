"""Alerts, end to end: a worker configured with ``[alerts]`` (environment ``CHORDFLOW_ALERTS__*``), real
Redis, real runs, and a real HTTP receiver for the signed webhooks.

A failing run, a slow task (k x the median of its previous runs), a queue nobody consumes and a high
failure rate each produce one alert, delivered through the notification outbox like a run end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator import Pipeline, keys
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess
from orchestrator.settings import Settings
from tests.conftest import REPO, until
from tests.integration.test_notify import SECRET, Mailbox, Receiver, _wait_live, mailbox, receiver, verify
from tests.pipelines import stamp

QUEUE = "alerts-q"
ORPHAN = "alerts-orphan-q"  #: a configured queue no worker consumes
ONCALL = "oncall@test.invalid"
__all__ = ["mailbox", "receiver"]  # the SMTP server and webhook receiver fixtures of test_notify.py, used here too


@pytest.fixture(scope="module")
def aclient(
    redis_server: RedisServer, redis_client: redis.Redis, worker_env: dict[str, str], settings: Settings,
    receiver: Receiver, mailbox: tuple[Mailbox, int], artifact_root: Path,
) -> Iterator[Client]:  # fmt: skip
    env = {
        **worker_env,
        "CHORDFLOW_NOTIFY_SENDER": "true",
        "CHORDFLOW_WEBHOOK_SECRET": SECRET,
        "CHORDFLOW_NOTIFY_BACKOFF_S": "0.2",
        "CHORDFLOW_DEFAULT_QUEUE": QUEUE,
        "CHORDFLOW_QUEUES": f"{QUEUE},{ORPHAN}",
        "CHORDFLOW_ALERTS__WEBHOOKS": json.dumps([receiver.url("/alerts")]),
        "CHORDFLOW_ALERTS__EMAILS": json.dumps([ONCALL]),
        "CHORDFLOW_SMTP_HOST": "127.0.0.1",
        "CHORDFLOW_SMTP_PORT": str(mailbox[1]),
        "CHORDFLOW_ALERTS__INTERVAL_S": "0.3",
        "CHORDFLOW_ALERTS__SLOW_FACTOR": "4",
        "CHORDFLOW_ALERTS__SLOW_MIN_SAMPLES": "3",
        "CHORDFLOW_ALERTS__SLOW_MIN_S": "0.3",
        "CHORDFLOW_ALERTS__QUEUE_STALE_S": "1",
        "CHORDFLOW_ALERTS__FAILURE_RATE": "0.5",
        "CHORDFLOW_ALERTS__FAILURE_MIN_TASKS": "3",
        "CHORDFLOW_ALERTS__FAILURE_WINDOW_S": "60",
    }
    proc = WorkerProcess(redis_server.url, "alerts@%h", concurrency=2, queues=[QUEUE],
                         log_path=artifact_root / "logs" / "alerts.log", extra_env=env, cwd=REPO).start()  # fmt: skip
    try:
        _wait_live(redis_client, "alerts")
        yield Client(settings.model_copy(update={"default_queue": QUEUE}))
    finally:
        proc.stop()
        # leave nothing for later tests: the ledger stops feeding alerts, no alert waits in the outbox
        redis_client.hdel(keys.METRICS, "failed_on", "slow_on")
        left = [m for m in redis_client.zrange(keys.NOTIFY, 0, -1) if m.startswith(keys.ALERT_MEMBER)]
        if left:
            redis_client.zrem(keys.NOTIFY, *left)


def alerts_of(receiver: Receiver, kind: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
    out = []
    for req in receiver.at("/alerts"):
        body = verify(req)  # signed like every notification
        if body.get("alert") == kind:
            out.append(({k.lower(): v for k, v in req["headers"].items()}, body))
    return out


def test_a_failing_run_produces_one_alert(aclient: Client, receiver: Receiver, mailbox: tuple[Mailbox, int]) -> None:
    # When a run fails
    run_id = aclient.submit(Pipeline("alert-fail").add_task(stamp, name="boom", params={"fail": True}))
    assert aclient.wait(run_id, timeout_s=60).state == "failed"
    # Then one signed webhook says so, with the failed task and its error
    got = until(lambda: [b for b in alerts_of(receiver, "run_failed") if b[1]["run_id"] == run_id], 30,
                   "the run_failed alert")  # fmt: skip
    headers, body = got[0]
    assert headers["x-chordflow-event"] == "alert.run_failed"
    assert body["state"] == "failed" and body["pipeline"] == "alert-fail"
    assert (
        body["failed_tasks"][0]["task"] == "boom" and "failed on purpose" in body["failed_tasks"][0]["error"]["message"]
    )
    assert body["summary"] == f"run {run_id} of pipeline 'alert-fail' failed"
    # and one e-mail
    mails = until(lambda: [m for m in mailbox[0].to(ONCALL) if run_id in m["Subject"]], 30, "the alert e-mail")
    assert mails[0]["Subject"].strip() == f"[chordflow] alert: run {run_id} of pipeline 'alert-fail' failed"
    assert mails[0]["X-Chordflow-Idempotency-Key"].strip() == body["idempotency_key"]
    time.sleep(1)  # nothing twice
    assert len([b for b in alerts_of(receiver, "run_failed") if b[1]["run_id"] == run_id]) == 1


def test_a_task_slower_than_k_times_its_median_produces_one_alert(aclient: Client, receiver: Receiver) -> None:
    # Given 3 runs of a task that take ~0.1 s
    for _ in range(3):
        rid = aclient.submit(Pipeline("alert-slow").add_task(stamp, name="s", params={"seconds": 0.1}))
        assert aclient.wait(rid, timeout_s=60).state == "succeeded"
    assert not [b for b in alerts_of(receiver, "slow_task") if b[1]["details"]["run_id"] == rid]
    # When one takes 1 s (over 4x the median)
    slow = aclient.submit(Pipeline("alert-slow").add_task(stamp, name="s", params={"seconds": 1.0}))
    assert aclient.wait(slow, timeout_s=60).state == "succeeded"
    # Then an alert names the task, the run, its duration and the median
    got = until(lambda: [b for b in alerts_of(receiver, "slow_task") if b[1]["details"]["run_id"] == slow], 30,
                   "the slow_task alert")  # fmt: skip
    headers, body = got[0]
    assert headers["x-chordflow-event"] == "alert.slow_task"
    d = body["details"]
    assert d["task"] == "tests.stamp" and d["node"] == "s" and d["duration_s"] >= 1.0
    assert 0.05 < d["median_s"] < 0.25 and d["duration_s"] > 4 * d["median_s"]


def test_a_queue_nobody_consumes_produces_an_alert(
    aclient: Client, receiver: Receiver, redis_client: redis.Redis
) -> None:
    redis_client.lpush(ORPHAN, "a message nobody takes")
    try:
        got = until(lambda: alerts_of(receiver, "queue_stale"), 30, "the queue_stale alert")
    finally:
        redis_client.delete(ORPHAN)
    body = got[0][1]
    assert body["details"]["queue"] == ORPHAN and body["details"]["depth"] == 1 and body["details"]["waited_s"] >= 1


def test_a_high_failure_rate_produces_an_alert(aclient: Client, receiver: Receiver, redis_client: redis.Redis) -> None:
    for _ in range(3):
        rid = aclient.submit(Pipeline("alert-rate").add_task(stamp, name="boom", params={"fail": True}))
        assert aclient.wait(rid, timeout_s=60).state == "failed"
    got = until(lambda: alerts_of(receiver, "failure_rate"), 30, "the failure_rate alert")
    d = got[0][1]["details"]
    assert d["failure_rate"] >= 0.5 and d["attempts"] >= 3
    assert int(redis_client.hget(keys.METRICS, "alert|failure_rate") or 0) >= 1
