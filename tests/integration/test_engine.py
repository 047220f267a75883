"""The engine end to end: real Redis, real Celery worker processes, no mocks."""

from __future__ import annotations

import base64
import json
import pickle
import threading
import time
import uuid

import pytest
import redis

from orchestrator import Pipeline, keys
from orchestrator.client import Client
from orchestrator.keys import run_keys
from tests.conftest import run_to_end
from tests.pipelines import add, always_report, double, flaky, layered, noop, number, stamp

pytestmark = pytest.mark.usefixtures("worker")


def _t(snap, node: str, what: str) -> float:
    return float(snap.times[f"{node}:{what}"])


def test_linear_pipeline_passes_typed_results_down(client: Client) -> None:
    """number -> double -> double2: each receives its parent's result by name."""
    # Given a linear pipeline (compiled to one Celery chain)
    p = (
        Pipeline("linear")
        .add_task(number, params={"value": 5})
        .add_task(double, depends_on=["number"])
        .add_task(add, name="total", depends_on=["double"])
    )
    assert len(client.plan(p).segments) == 1
    # When it runs
    snap = run_to_end(client, p)
    # Then every step succeeded in order and the values flowed through
    assert snap.state == "succeeded"
    assert client.results(snap.run_id) == {"number": {"value": 5}, "double": {"value": 10}, "total": {"value": 10}}
    assert _t(snap, "number", "finished") <= _t(snap, "double", "started") <= _t(snap, "total", "started")


def test_diamond_join_waits_for_both_parents(client: Client) -> None:
    """a -> (b, c) -> d: d starts only after both b and c finished, and sums both."""
    p = (
        Pipeline("diamond")
        .add_task(number, name="a", params={"value": 1})
        .add_task(add, name="b", depends_on=["a"])
        .add_task(add, name="c", depends_on=["a"])
        .add_task(add, name="d", depends_on=["b", "c"])
    )
    snap = run_to_end(client, p)
    assert snap.state == "succeeded"
    assert client.results(snap.run_id)["d"] == {"value": 2}
    assert _t(snap, "d", "started") >= max(_t(snap, "b", "finished"), _t(snap, "c", "finished"))


def test_wide_fan_out_of_500_tasks(client: Client) -> None:
    """One root releases 500 children at once; every one runs exactly once."""
    p = Pipeline("fanout").add_task(noop, name="root")
    for i in range(500):
        p.add_task(noop, name=f"leaf{i}", depends_on=["root"])
    p.add_task(noop, name="sink", depends_on=[f"leaf{i}" for i in range(500)])
    snap = run_to_end(client, p, timeout_s=120)
    assert snap.state == "succeeded"
    assert snap.counts() == {"succeeded": 502}
    assert set(snap.attempts.values()) == {"1"}


def test_non_series_parallel_graph_does_not_wait_for_unrelated_branch(
    client: Client, redis_client: redis.Redis
) -> None:
    """A->C, A->D, B->D with B slow: C finishes before B does (no level barrier)."""
    p = (
        Pipeline("nsp")
        .add_task(stamp, name="A", params={"seconds": 0.0})
        .add_task(stamp, name="B", params={"seconds": 2.0})
        .add_task(stamp, name="C", depends_on=["A"], params={"seconds": 0.0})
        .add_task(stamp, name="D", depends_on=["A", "B"], params={"seconds": 0.0})
    )
    snap = run_to_end(client, p)
    assert snap.state == "succeeded"
    # Ledger timestamps come from one clock (Redis TIME)
    assert _t(snap, "C", "finished") < _t(snap, "B", "finished")
    assert _t(snap, "D", "started") >= _t(snap, "B", "finished")
    assert _t(snap, "D", "started") >= _t(snap, "A", "finished")
    executions = redis_client.hgetall(f"tests:executions:{snap.run_id}")
    assert executions == {"A": "1", "B": "1", "C": "1", "D": "1"}


def test_failure_isolated_to_descendants_and_always_task_runs(client: Client, redis_client: redis.Redis) -> None:
    """bad fails: its descendants upstream_failed, the other branch succeeds, the always-task runs."""
    p = (
        Pipeline("isolation")
        .add_task(stamp, name="bad", params={"fail": True})
        .add_task(stamp, name="after_bad", depends_on=["bad"])
        .add_task(stamp, name="after_after", depends_on=["after_bad"])
        .add_task(stamp, name="good", params={"seconds": 0.3})
        .add_task(stamp, name="after_good", depends_on=["good"])
        .add_task(always_report, name="cleanup", depends_on=["after_after", "after_good"])
    )
    snap = run_to_end(client, p)
    assert snap.state == "failed"
    assert snap.states == {
        "bad": "failed",
        "after_bad": "upstream_failed",
        "after_after": "upstream_failed",
        "good": "succeeded",
        "after_good": "succeeded",
        "cleanup": "succeeded",
    }
    assert client.results(snap.run_id)["cleanup"] == {"seen": ["after_good"]}
    executions = redis_client.hgetall(f"tests:executions:{snap.run_id}")
    assert "after_bad" not in executions and executions["cleanup"] == "1"
    error = json.loads(snap.errors["bad"])
    assert error["type"] == "RuntimeError" and "failed on purpose" in error["message"]


def test_retry_then_success_records_every_attempt(client: Client) -> None:
    """A task failing twice then succeeding ends succeeded with 3 attempts recorded."""
    p = Pipeline("retry").add_task(flaky, params={"failures": 2}).add_task(noop, name="after", depends_on=["flaky"])
    snap = run_to_end(client, p)
    assert snap.state == "succeeded"
    assert snap.attempts["flaky"] == "3"
    log = [e for e in client.store.attempt_log(snap.run_id) if e["task"] == "flaky"]
    assert [(e["attempt"], e["outcome"]) for e in log] == [(1, "retrying"), (2, "retrying"), (3, "succeeded")]
    assert log[0]["error"] == "ConnectionError"
    assert client.results(snap.run_id)["flaky"] == {"value": 3}


def test_retries_exhausted_fail_the_task(client: Client) -> None:
    p = Pipeline("retry-exhausted").add_task(flaky, params={"failures": 10})
    snap = run_to_end(client, p)
    assert snap.state == "failed"
    assert snap.states["flaky"] == "failed" and snap.attempts["flaky"] == "4"


def _capture_lpush_sizes(url: str, stop: threading.Event, sizes: list[int]) -> None:
    """Record the size of every message LPUSHed to the broker queue, via MONITOR."""
    r = redis.Redis.from_url(url)
    with r.monitor() as m:
        for cmd in m.listen():
            if stop.is_set():
                return
            c = cmd.get("command", "")
            if c.startswith("LPUSH chordflow ") or c.startswith('"LPUSH" "chordflow"'):
                sizes.append(len(c))


def test_largest_broker_message_does_not_grow_with_the_dag(client: Client, redis_server) -> None:
    """The largest message of a 10-node and a 1,000-node layered DAG have the same size."""
    largest = {}
    for width, depth in ((5, 2), (100, 10)):
        sizes: list[int] = []
        stop = threading.Event()
        t = threading.Thread(target=_capture_lpush_sizes, args=(redis_server.url, stop, sizes), daemon=True)
        t.start()
        time.sleep(0.3)
        snap = run_to_end(client, layered(width, depth), timeout_s=120)
        assert snap.state == "succeeded"
        stop.set()
        client.store.r.ping()  # wakes the monitor so it sees stop
        t.join(5)
        assert sizes, "no broker message observed"
        largest[width * depth] = max(sizes)
    # Node names differ in length (n0_1 vs n9_99); allow those few bytes, nothing proportional to size
    assert abs(largest[1000] - largest[10]) <= 16, largest


def _create_undispatched(client: Client, pipeline: Pipeline) -> str:
    """A run created in Redis exactly as submit() does, minus the dispatch of its roots."""
    from orchestrator.compile import node_records, templates

    plan = client.plan(pipeline)
    run_id = client.store.reserve_run_id()
    client.store.create_run(
        run_id,
        meta={"pipeline": plan.pipeline},
        records=node_records(client.app, run_id, plan),
        pending={},
        templates=templates(client.app, plan),
    )
    return run_id


def test_pickled_message_is_rejected_and_nothing_runs(client: Client, redis_client: redis.Redis) -> None:
    """JSON only: a pickle-serialised task message on the queue is refused by the worker."""
    # Given a run whose node is ready to run but has no message yet
    run_id = _create_undispatched(client, Pipeline("pickle").add_task(stamp, name="victim"))
    redis_client.hset(run_keys(run_id).state, "victim", "queued")
    # When a pickled message for that node is pushed onto the queue
    body = pickle.dumps(((run_id, "victim"), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}))
    task_id = f"pickled-{uuid.uuid4().hex}"
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {"lang": "py", "task": "tests.stamp", "id": task_id, "root_id": task_id, "parent_id": None,
                    "argsrepr": "", "retries": 0, "timelimit": [None, None], "eta": None, "expires": None,
                    "group": None, "origin": "test", "kwargsrepr": "{}", "ignore_result": True},
        "properties": {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": "chordflow"}, "priority": 0,
                       "body_encoding": "base64", "delivery_tag": task_id},
    }  # fmt: skip
    redis_client.lpush("chordflow", json.dumps(envelope))
    # and a normal JSON run is pushed behind it and completes
    follow = client.submit(Pipeline("after-pickle").add_task(noop))
    assert client.wait(follow, timeout_s=30, poll_s=0.05).state == "succeeded"
    deadline = time.monotonic() + 10
    while redis_client.llen("chordflow") and time.monotonic() < deadline:
        time.sleep(0.05)
    # Then the worker consumed and refused it: nothing executed, the node never started
    assert redis_client.llen("chordflow") == 0
    assert redis_client.hget(f"tests:executions:{run_id}", "victim") is None
    assert client.status(run_id).states["victim"] == "queued"
    # Control: the same node dispatched as JSON does run (so the check above could fail)
    redis_client.hset(run_keys(run_id).state, "victim", "pending")
    assert client.store.dispatch(run_id, ["victim"]) == 1
    assert client.wait(run_id, timeout_s=30, poll_s=0.05).state == "succeeded"
    assert redis_client.hget(f"tests:executions:{run_id}", "victim") == "1"


def test_small_run_is_created_in_one_step_and_never_over_a_taken_id(client: Client, redis_client: redis.Redis) -> None:
    """A small job's id, state and roots go in one ledger call; an id another run holds is refused whole,
    and a re-sent call (its first reply lost) finds its own run instead of creating a second one."""
    from orchestrator.compile import node_records, templates

    # Given a one-task run submitted normally (the one-step path), which has finished
    first = client.submit(Pipeline("taken").add_task(noop))
    assert client.wait(first, timeout_s=30, poll_s=0.05).state == "succeeded"
    before = redis_client.hgetall(run_keys(first).meta)
    assert before["creator"] and before["dispatched"] == "1"
    # in the runs index and its pipeline's own (the dashboard's list reads it), like a big run
    assert redis_client.zscore(keys.RUNS_INDEX, first) is not None
    assert redis_client.zscore(keys.pipeline_runs("taken"), first) is not None
    # When another submit draws the same run id
    other = Pipeline("intruder").add_task(stamp, name="intruder")
    plan = client.plan(other)
    args = (first, {"pipeline": "intruder"}, node_records(client.app, first, plan), {}, templates(client.app, plan),
            ["intruder"])  # fmt: skip
    # Then it is refused (the caller picks another id) and the first run is untouched, nothing queued
    assert client.store.create_small(*args) is None
    assert redis_client.hgetall(run_keys(first).meta) == before
    assert redis_client.hget(run_keys(first).state, "intruder") is None
    assert redis_client.hget(f"tests:executions:{first}", "intruder") is None
    # And a call re-sent with the first call's creator token is answered as a success, changing nothing
    assert client.store.create_small(*args, creator=before["creator"]) == "0-0"
    assert redis_client.hgetall(run_keys(first).meta) == before
    # A fresh id with the same arguments creates and runs the run
    fresh = client.store.fresh_run_id()
    args = (fresh, *args[1:2], node_records(client.app, fresh, plan), *args[3:])
    after = client.store.create_small(*args)
    assert after is not None and after != "0-0"
    assert client.wait(fresh, timeout_s=30, poll_s=0.05).state == "succeeded"
    assert redis_client.hget(f"tests:executions:{fresh}", "intruder") == "1"


def test_a_pipeline_changed_in_place_between_submits_is_planned_again(client: Client) -> None:
    """Submit reuses what it derived from a pipeline submitted before (plan, templates, fingerprints), but
    only while the pipeline is the same: params edited in place and added tasks are seen."""
    # Given a pipeline submitted once
    p = Pipeline("replanned").add_task(number, params={"value": 2})
    first = run_to_end(client, p)
    assert first.state == "succeeded" and client.results(first.run_id)["number"] == {"value": 2}
    # When its params are changed in place and a task is added, then it is submitted again
    p.nodes[0].params["value"] = 7
    p.add_task(double, depends_on=["number"])
    second = run_to_end(client, p)
    # Then the second run ran the new params and the new task
    assert second.state == "succeeded"
    assert client.results(second.run_id) == {"number": {"value": 7}, "double": {"value": 14}}
    fps = [json.loads(client.store.r.hget(run_keys(s.run_id).nodes, "number"))["fp"] for s in (first, second)]
    assert fps[0] != fps[1]
    # And the same pipeline submitted unchanged gives the same fingerprint and result again
    third = run_to_end(client, p)
    assert client.results(third.run_id) == client.results(second.run_id)
    assert json.loads(client.store.r.hget(run_keys(third.run_id).nodes, "number"))["fp"] == fps[1]
