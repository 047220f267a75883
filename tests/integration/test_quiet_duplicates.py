"""Duplicates and re-sent calls stay quiet and inert: no chain continued by a skipped message, no false alarm."""

from __future__ import annotations

import time

import pytest
from celery import chain

from orchestrator import Pipeline
from orchestrator.client import Client
from tests.conftest import run_to_end
from tests.pipelines import stamp

pytestmark = pytest.mark.usefixtures("worker")


def test_a_skipped_stale_message_does_not_publish_the_rest_of_its_chain(client: Client, artifact_root) -> None:
    """A stale copy of a finished chain head is skipped, and its followers' messages are never sent."""
    snap = run_to_end(client, Pipeline("stale-chain").add_task(stamp, name="a").add_task(
        stamp, name="b", depends_on=["a"]).add_task(stamp, name="c", depends_on=["b"]))  # fmt: skip
    run_id = snap.run_id
    assert snap.state == "succeeded"
    # Given a stale duplicate of the head, carrying the rest of the segment as a Celery chain
    sig = [client.app.signature("tests.stamp", args=(run_id, n), immutable=True) for n in ("a", "b", "c")]
    chain(*sig).apply_async(queue="chordflow", task_id=f"{run_id}.a.stale")
    log = artifact_root / "logs" / "worker.log"
    deadline = time.monotonic() + 20

    def skips() -> dict[str, int]:
        lines = [x for x in log.read_text(errors="replace").splitlines() if run_id in x and "task.skipped" in x]
        return {n: sum(1 for x in lines if f'"task": "{n}"' in x) for n in ("a", "b", "c")}

    while skips()["a"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # a published follower would be consumed well within this on an idle worker
    # Then the head was skipped once and nothing downstream was even delivered
    assert skips() == {"a": 1, "b": 0, "c": 0}
    assert client.status(run_id).attempts == snap.attempts


def test_a_resent_settle_that_finds_its_own_result_is_ok_not_a_duplicate(client: Client, redis_client) -> None:
    from orchestrator.keys import run_keys
    from tests.integration.test_engine import _create_undispatched

    run_id = _create_undispatched(client, Pipeline("resend-settle").add_task(stamp, name="x").add_task(
        stamp, name="y"))  # fmt: skip
    redis_client.hset(run_keys(run_id).state, mapping={"x": "queued", "y": "queued"})
    assert client.store.begin(run_id, "x", "h", 60_000, "tx", "t1").status == "run"
    assert client.store.succeed(run_id, "x", "tx", '{"v": 1}', "{}") == "ok"
    assert client.store.succeed(run_id, "x", "tx", '{"v": 1}', "{}") == "ok"  # re-sent after a lost reply
    assert client.store.succeed(run_id, "x", "other", '{"v": 2}', "{}") == "dup"  # a different result is refused
    assert client.store.begin(run_id, "y", "h", 60_000, "ty", "t2").status == "run"
    assert client.store.fail(run_id, "y", "ty", '{"type": "E"}', "{}") == "ok"
    assert client.store.fail(run_id, "y", "ty", '{"type": "E"}', "{}") == "ok"
    assert client.results(run_id) == {"x": {"v": 1}}
