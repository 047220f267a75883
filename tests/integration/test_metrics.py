"""``GET /metrics``: parsed with prometheus_client's own text parser; the values are the runs made.

Real Redis, the session's real Celery worker, the real FastAPI app (in process). Counters are
cluster-wide and cumulative, so the test compares two scrapes around what it does (tests run one at
a time: nothing else settles tasks in between).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from orchestrator import Pipeline, keys, metrics
from orchestrator.api import auth
from orchestrator.api.app import create_app
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess
from orchestrator.metrics import LEDGER_LATENCY
from orchestrator.settings import Settings
from tests import metrics_tasks
from tests.conftest import REPO, run_to_end
from tests.integration.test_notify import _wait_live
from tests.pipelines import flaky, noop, stamp

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: TestClient) -> Samples:
    resp = http.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(resp.text)
        for s in fam.samples
    }


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_match_the_runs_made(
    client: Client, worker: object, settings: Settings, redis_client: redis.Redis
) -> None:
    # Given the API app and a pipeline name nobody else uses
    app = create_app(settings, auth.Tokens.from_settings(settings))
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    with TestClient(app) as http:
        LEDGER_LATENCY.flush(client.store.r)  # ledger calls earlier tests made from this process count before
        before = scrape(http)
        # When 3 runs succeed, 1 fails and 1 succeeds after two retries
        for _ in range(3):
            assert (
                run_to_end(client, Pipeline(name).add_task(stamp, name="a", params={"seconds": 0.0})).state
                == "succeeded"
            )
        assert run_to_end(client, Pipeline(name).add_task(stamp, name="a", params={"fail": True})).state == "failed"
        done = run_to_end(client, Pipeline(name + "-f").add_task(flaky, params={"failures": 2}))
        assert done.state == "succeeded"
        client.store.cancel(done.run_id)  # a ledger call from this process (answers "done"), timed here
        # and a message waits in a queue nobody consumes
        redis_client.lpush("metrics-test-q", "x")
        LEDGER_LATENCY.flush(client.store.r)  # this process's own ledger calls (submits): in Redis now
        after = scrape(http)
        redis_client.delete("metrics-test-q")

    # Then every value is what was made
    runs = "chordflow_runs_finished_total"
    assert delta(after, before, runs, pipeline=name, state="succeeded") == 3
    assert delta(after, before, runs, pipeline=name, state="failed") == 1
    assert delta(after, before, runs, pipeline=name + "-f", state="succeeded") == 1
    hist = "chordflow_task_duration_seconds"
    assert delta(after, before, hist + "_count", task="tests.stamp", outcome="succeeded") == 3
    assert delta(after, before, hist + "_count", task="tests.stamp", outcome="failed") == 1
    assert delta(after, before, hist + "_count", task="tests.flaky", outcome="retrying") == 2
    assert delta(after, before, hist + "_count", task="tests.flaky", outcome="succeeded") == 1
    assert delta(after, before, hist + "_bucket", task="tests.stamp", outcome="succeeded", le="+Inf") == 3
    assert 0 <= delta(after, before, hist + "_sum", task="tests.stamp", outcome="succeeded") < 3
    assert delta(after, before, "chordflow_task_retries_total", task="tests.flaky") == 2
    assert delta(after, before, "chordflow_task_retries_total", task="tests.stamp") == 0
    # gauges: nothing of ours is left running; the session worker is live
    assert after[("chordflow_tasks_in_flight", ())] >= 0
    assert after[("chordflow_workers_live", ())] >= 1
    assert ("chordflow_queue_depth", (("queue", "chordflow"),)) in after
    # ledger calls are timed by their caller (workers flush every few seconds; this process just did)
    assert delta(after, before, "chordflow_ledger_call_seconds_count", op="cancel") == 1
    assert delta(after, before, "chordflow_ledger_call_seconds_bucket", op="cancel", le="+Inf") == 1


def test_queue_depth_counts_kombu_lists_of_known_queues(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a configured queue with 2 messages, one of them at kombu priority 3
    s = settings.model_copy(update={"queues": ["chordflow", "depth-q"]})
    redis_client.lpush("depth-q", "m1")
    redis_client.lpush("depth-q\x06\x163", "m2")
    try:
        with TestClient(create_app(s, auth.Tokens.from_settings(s))) as http:
            started = time.perf_counter()
            samples = scrape(http)
            assert time.perf_counter() - started < 5
    finally:
        redis_client.delete("depth-q", "depth-q\x06\x163")
    assert samples[("chordflow_queue_depth", (("queue", "depth-q"),))] == 2


@pytest.fixture(scope="module")
def lost_worker(
    redis_server: RedisServer, redis_client: redis.Redis, worker_env: dict[str, str], artifact_root: Path
) -> Iterator[WorkerProcess]:
    """A worker of its own for tasks that hit time limits or kill their process (tests/metrics_tasks.py)."""
    env = {**worker_env, "CHORDFLOW_TASK_MODULES": "tests.metrics_tasks", "CHORDFLOW_QUEUES": metrics_tasks.QUEUE}
    proc = WorkerProcess(redis_server.url, "metrics@%h", concurrency=2, queues=[metrics_tasks.QUEUE],
                         log_path=artifact_root / "logs" / "metrics.log", extra_env=env, cwd=REPO).start()  # fmt: skip
    try:
        _wait_live(redis_client, "metrics")
        yield proc
    finally:
        proc.stop()


def test_time_limits_and_lost_processes_are_counted(
    client: Client, settings: Settings, lost_worker: WorkerProcess
) -> None:
    with TestClient(create_app(settings, auth.Tokens.from_settings(settings))) as http:
        before = scrape(http)
        # When one task passes its soft limit, one its hard limit, and one kills its own process once
        p = Pipeline(f"metrics-limits-{uuid.uuid4().hex[:6]}")
        p.add_task(metrics_tasks.soft).add_task(metrics_tasks.hard).add_task(metrics_tasks.die_once)
        snap = run_to_end(client, p, timeout_s=90)
        after = scrape(http)
    assert snap.states == {"soft": "failed", "hard": "failed", "die_once": "succeeded"}, snap.errors
    timeouts, lost = "chordflow_task_timeouts_total", "chordflow_tasks_lost_total"
    assert delta(after, before, timeouts, task="tests.metrics.soft", kind="soft") == 1
    assert delta(after, before, timeouts, task="tests.metrics.hard", kind="hard") == 1
    assert delta(after, before, lost, task="tests.metrics.die_once", reason="worker_lost") == 1
    hist = "chordflow_task_duration_seconds_count"
    assert delta(after, before, hist, task="tests.metrics.soft", outcome="failed") == 1
    assert delta(after, before, hist, task="tests.metrics.hard", outcome="timeout") == 1
    assert delta(after, before, hist, task="tests.metrics.die_once", outcome="worker_lost") == 1
    assert delta(after, before, hist, task="tests.metrics.die_once", outcome="succeeded") == 1
    # the hard limit is at 0.8 s: its attempt is in the 1 s bucket, not below 0.5 s
    assert delta(after, before, "chordflow_task_duration_seconds_bucket", task="tests.metrics.hard",
                 outcome="timeout", le="0.5") == 0  # fmt: skip


def test_a_scrape_sends_the_same_commands_whatever_the_history(
    client: Client, worker: object, settings: Settings, redis_server: RedisServer
) -> None:
    # one connection, so that its own command counter (CLIENT INFO tot-cmds) counts exactly one scrape
    r = redis.Redis(
        connection_pool=redis.BlockingConnectionPool.from_url(
            redis_server.url, max_connections=1, decode_responses=True
        )
    )

    def commands_of_one_scrape() -> int:
        def total() -> int:
            info = r.execute_command("CLIENT", "INFO")
            return int(dict(f.split("=", 1) for f in info.split() if "=" in f)["tot-cmds"])

        before = total()
        text = metrics.exposition(r, settings)
        assert b"chordflow_runs_finished_total" in text
        return total() - before - 1  # the second CLIENT INFO counts itself

    first = commands_of_one_scrape()
    # When 100 more runs end
    ids = [client.submit(Pipeline("metrics-history").add_task(noop)) for _ in range(100)]
    for run_id in ids:
        assert client.wait(run_id, timeout_s=60, poll_s=0.05).state == "succeeded"
    # Then a scrape sends exactly as many commands: nothing it reads grows with runs
    assert commands_of_one_scrape() == first
    assert first < 20, first


def test_a_damaged_metrics_key_never_breaks_a_transition(tmp_path: Path) -> None:
    # Given a Redis of its own where the metrics hash and the settled stream are keys of another type
    server = RedisServer(tmp_path / "redis").start()
    try:
        s = Settings(redis_url=SecretStr(server.url), task_modules=["tests.pipelines"],
                     allowed_task_prefixes=["tests."], use_cache=False)  # fmt: skip
        c = Client(s)
        c.store.r.set(keys.METRICS, "not a hash")
        c.store.r.set(keys.SETTLED, "not a stream")
        # When a run's tasks are claimed and settled (as a worker would), one of them failing
        p = Pipeline("damaged").add_task(noop, name="a").add_task(noop, name="b", depends_on=["a"])
        p.add_task(noop, name="c")
        run_id = c.submit(p)
        for node in ("a", "b", "c"):
            claim = c.store.begin(run_id, node, "h", 30000, "tok", f"{run_id}.{node}.x")
            assert claim.status == "run", claim
            if node == "c":
                assert c.store.fail(run_id, node, "tok", '{"type": "E", "message": "m"}', "{}") == "ok"
            else:
                assert c.store.succeed(run_id, node, "tok", "null", "{}") == "ok"
        # Then every transition happened in full: the run ended, nothing half done
        snap = c.status(run_id)
        assert snap.state == "failed" and snap.states == {"a": "succeeded", "b": "succeeded", "c": "failed"}
        assert c.store.r.get(keys.METRICS) == "not a hash"
    finally:
        server.stop()
