"""`chordflow retry` and run-key lifetimes, on real Redis and workers."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.errors import RunNotFinished
from orchestrator.keys import run_keys
from tests.conftest import run_to_end
from tests.fault_report import record
from tests.integration.test_cli import chordflow
from tests.pipelines import gate, stamp

pytestmark = pytest.mark.usefixtures("worker")


def test_retry_reruns_only_failed_and_upstream_failed(
    client: Client, redis_client: redis.Redis, cli_env: dict[str, str]
) -> None:
    flag = f"tests:gate:{uuid.uuid4().hex}"
    p = (
        Pipeline("retry-run")
        .add_task(stamp, name="ok1")
        .add_task(gate, name="broken", depends_on=["ok1"], params={"flag": flag})
        .add_task(stamp, name="after", depends_on=["broken"])
        .add_task(stamp, name="ok2")
    )
    # Given a run that failed in one branch
    first = run_to_end(client, p)
    assert first.states == {"ok1": "succeeded", "broken": "failed", "after": "upstream_failed", "ok2": "succeeded"}
    # When the cause is fixed and the run is retried from the CLI
    redis_client.set(flag, 1)
    proc = chordflow("retry", first.run_id, env=cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "re-running 2 tasks" in proc.stdout
    snap = client.status(first.run_id)
    # Then only the failed and upstream_failed tasks ran again, and the run succeeded
    assert snap.state == "succeeded" and set(snap.states.values()) == {"succeeded"}
    executions = redis_client.hgetall(f"tests:executions:{first.run_id}")
    assert executions == {"ok1": "1", "broken": "2", "after": "1", "ok2": "1"}
    assert snap.attempts["broken"] == "1"  # attempts count afresh per retry; the attempt log keeps history
    assert [e["outcome"] for e in client.store.attempt_log(first.run_id) if e["task"] == "broken"] == [
        "failed",
        "succeeded",
    ]
    # And retrying a succeeded run does nothing
    assert client.retry(first.run_id) == 0


def test_retry_of_unfinished_run_is_refused(client: Client) -> None:
    run_id = client.submit(Pipeline("busy").add_task(stamp, name="slow", params={"seconds": 1.5}))
    with pytest.raises(RunNotFinished):
        client.retry(run_id)
    assert client.wait(run_id, timeout_s=30).state == "succeeded"


def test_run_keys_do_not_expire_while_active_then_get_ttl(settings, redis_client: redis.Redis) -> None:
    """RELIABILITY #14: a run TTL shorter than the run never expires state mid-run."""
    short = Client(settings.model_copy(update={"run_ttl_s": 2}))
    run_id = short.submit(Pipeline("ttl").add_task(stamp, name="slow", params={"seconds": 4}).add_task(
        stamp, name="next", depends_on=["slow"]))  # fmt: skip
    k = run_keys(run_id)
    time.sleep(3)
    assert redis_client.ttl(k.meta) == -1 and redis_client.ttl(k.nodes) == -1
    snap = short.wait(run_id, timeout_s=30)
    assert snap.state == "succeeded"
    assert 0 < redis_client.ttl(k.meta) <= 2 and 0 < redis_client.ttl(k.results) <= 2
    record({"scenario": "14 run TTL shorter than the run", "state": snap.state,
            "run_s": round(float(snap.meta["finished_at"]) - float(snap.meta["created_at"]), 3),
            "ttl_after_end_s": redis_client.ttl(k.meta)})  # fmt: skip
