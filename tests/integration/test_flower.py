"""Flower stays first-class: a real ``celery flower`` (basic auth) against the test Redis, a real worker
sending task events, and Flower's own API (``/api/tasks``).

* a running task shows state ``PROGRESS`` with its progress (``result`` = ``{"done", "total"}``);
* a finished one shows a short summary as its result, not ``None``;
* hops of a Celery chain carry readable ids ``<run_id>.<node>.<n>`` like ledger-dispatched ones.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess, free_port, terminate_group
from orchestrator.settings import Settings
from tests.conftest import REPO, TEST_PREFIXES, TEST_TASK_MODULES, until
from tests.pipelines import stamp

QUEUE = "flower-q"
AUTH = ("ops", f"fl-{uuid.uuid4().hex[:8]}")


class Flower:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={self.port}",
                 "--address=127.0.0.1", f"--basic-auth={AUTH[0]}:{AUTH[1]}",
                 f"--conf={REPO / 'workers' / 'flowerconfig.py'}"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def tasks(self) -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/tasks")
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            return {}

    def stop(self) -> None:
        terminate_group(self.proc, grace_s=5)


@pytest.fixture(scope="module")
def flower_stack(
    redis_server: RedisServer, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Client, Flower]]:
    root = tmp_path_factory.mktemp("flower")
    env = {
        **os.environ,
        "CHORDFLOW_REDIS_URL": redis_server.url,
        "CHORDFLOW_TASK_MODULES": TEST_TASK_MODULES,
        "CHORDFLOW_ALLOWED_TASK_PREFIXES": TEST_PREFIXES,
        "CHORDFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "CHORDFLOW_PROGRESS_INTERVAL_S": "0",
        "CHORDFLOW_TASK_EVENTS": "true",
        "CHORDFLOW_NOTIFY_SENDER": "false",
        "CHORDFLOW_DEFAULT_QUEUE": QUEUE,
        "C_FORCE_ROOT": "1",
        "PYTHONPATH": str(REPO),
    }
    flower = Flower(env, root / "flower.log")
    worker = WorkerProcess(redis_server.url, "flower-worker@%h", concurrency=2, queues=[QUEUE],
                           log_path=root / "worker.log", extra_env=env, cwd=REPO).start()  # fmt: skip
    client = Client(settings.model_copy(update={"default_queue": QUEUE}))
    try:
        # warm up until the worker consumes and Flower has seen its events
        for _ in range(10):
            run_id = client.submit(Pipeline("flower-warmup").add_task(stamp, name="w"))
            assert client.wait(run_id, timeout_s=60).state == "succeeded"
            if _wait_quiet(lambda rid=run_id: flower.tasks().get(f"{rid}.w.1"), 5):
                break
        else:
            pytest.fail("Flower never showed the warm-up task: " + (root / "flower.log").read_text()[-2000:])
        yield client, flower
    finally:
        worker.stop()
        flower.stop()


def _wait_quiet(cond: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    return None


def test_flower_shows_progress_result_summaries_and_readable_chain_ids(flower_stack: tuple[Client, Flower]) -> None:
    client, flower = flower_stack
    # Given a linear pipeline: `a` is dispatched by the ledger, `b` and `c` by the Celery chain a -> b -> c
    pipeline = (
        Pipeline("flower-chain")
        .add_task(stamp, name="a")
        .add_task(stamp, name="b", depends_on=["a"], params={"seconds": 3.0})
        .add_task(stamp, name="c", depends_on=["b"])
    )
    plan = client.plan(pipeline)
    assert [plan.nodes[n].via_chain for n in "abc"] == [False, True, True]
    run_id = client.submit(pipeline)

    # When b runs: Flower shows it in state PROGRESS with its progress, under a readable id
    def running_b() -> tuple[str, dict[str, Any]] | None:
        for tid, t in flower.tasks().items():
            if tid.startswith(f"{run_id}.b.") and t.get("state") == "PROGRESS":
                return tid, t
        return None

    tid_b, task_b = until(running_b, 30, "b in state PROGRESS in Flower")
    assert re.fullmatch(rf"{re.escape(run_id)}\.b\.\d+", tid_b)
    assert task_b["name"] == "tests.stamp"
    progress = task_b["result"]
    assert isinstance(progress, dict) and progress["total"] == 5 and 1 <= progress["done"] <= 5, progress

    # Then at the end every hop has a readable id and a summary as its result
    assert client.wait(run_id, timeout_s=60).state == "succeeded"

    def finished() -> dict[str, dict[str, Any]] | None:
        mine = {tid: t for tid, t in flower.tasks().items() if tid.startswith(run_id + ".")}
        done = [t for t in mine.values() if t.get("state") == "SUCCESS"]
        return mine if len(done) == 3 else None

    mine = until(finished, 20, "a, b and c SUCCESS in Flower")
    by_node = {tid.split(".")[1]: (tid, t) for tid, t in mine.items()}
    assert set(by_node) == {"a", "b", "c"}, mine.keys()
    for node, (tid, t) in by_node.items():
        assert re.fullmatch(rf"{re.escape(run_id)}\.{node}\.\d+", tid), tid
        assert "succeeded in" in str(t["result"]) and "Stamp (JSON object," in str(t["result"]), t["result"]
    numbers = sorted(int(tid.rsplit(".", 1)[1]) for tid, _ in by_node.values())
    assert len(set(numbers)) == 3  # one counter for ledger dispatches and chain hops: never the same id
