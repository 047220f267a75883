"""Session fixtures: one real redis-server on a free loopback port, one real Celery worker.

Never touches the machine's shared Redis on 6379 and never flushes anything:
every test works in its own run ids.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess
from orchestrator.settings import Settings
from orchestrator.store import RunSnapshot

REPO = Path(__file__).resolve().parent.parent
TEST_TASK_MODULES = "tasks,tests.pipelines,tests.hostile_tasks,tests.retry_tasks,tests.cache_tasks,tests.map_tasks"
TEST_PREFIXES = "tasks.,tests."
# Most tests run the same small pipelines again and again to test execution itself; the cache (C5)
# would settle those runs as `cached`. Caching is off for them; tests/integration/test_cache.py
# turns it on explicitly (Settings(use_cache=True), CHORDFLOW_USE_CACHE=true).
os.environ.setdefault("CHORDFLOW_USE_CACHE", "false")
os.environ.setdefault("CHORDFLOW_STATE_DIR", tempfile.mkdtemp(prefix="chordflow-test-state-"))  # not the checkout


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Fault figures are kept only from tests whose call phase passed (tests/fault_report.py)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        from tests.fault_report import settle

        settle(report.passed)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    assert server.port != 6379
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def worker_env(redis_server: RedisServer, artifact_root: Path) -> dict[str, str]:
    """Environment for workers and CLI subprocesses pointed at the session Redis."""
    return {
        "CHORDFLOW_REDIS_URL": redis_server.url,
        "CHORDFLOW_TASK_MODULES": TEST_TASK_MODULES,
        "CHORDFLOW_ALLOWED_TASK_PREFIXES": TEST_PREFIXES,
        "CHORDFLOW_ARTIFACT_ROOT": str(artifact_root),
        "CHORDFLOW_PROGRESS_INTERVAL_S": "0",
        "CHORDFLOW_TASK_EVENTS": "false",
        "CHORDFLOW_NOTIFY_SENDER": "false",  # notifications are sent by tests/integration/test_notify.py's workers
        "C_FORCE_ROOT": "1",
    }


@pytest.fixture(scope="session")
def settings(redis_server: RedisServer, artifact_root: Path) -> Settings:
    return Settings(
        redis_url=SecretStr(redis_server.url),
        artifact_root=artifact_root,
        task_modules=TEST_TASK_MODULES.split(","),
        allowed_task_prefixes=TEST_PREFIXES.split(","),
    )


@pytest.fixture(scope="session")
def client(settings: Settings) -> Client:
    return Client(settings)


@pytest.fixture(scope="session")
def worker(
    redis_server: RedisServer, worker_env: dict[str, str], artifact_root: Path, client: Client
) -> Iterator[WorkerProcess]:
    """One real ``celery worker`` (prefork, 4 processes) for the whole session."""
    proc = WorkerProcess(
        redis_server.url,
        "test-worker@%h",
        concurrency=4,
        queues=["chordflow"],
        log_path=artifact_root / "logs" / "worker.log",
        extra_env=worker_env,
        cwd=REPO,
    ).start()
    # Given a worker that has started, a trivial run completes (proves it consumes).
    from tests.pipelines import noop

    run_id = client.submit(Pipeline("warmup").add_task(noop))
    snap = client.wait(run_id, timeout_s=60)
    if snap.state != "succeeded":
        log = (artifact_root / "logs" / "worker.log").read_text()[-3000:]
        pytest.fail(f"test worker did not come up ({snap.state}):\n{log}")
    yield proc
    proc.stop()


def until(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``cond`` every 0.05 s until it returns something truthy (returned); fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


def run_to_end(client: Client, pipeline: Pipeline, timeout_s: float = 60) -> RunSnapshot:
    """Submit and wait with a deadline; fails the test on timeout (never a fixed sleep)."""
    run_id = client.submit(pipeline)
    deadline = time.monotonic() + timeout_s
    snap = client.wait(run_id, timeout_s=timeout_s, poll_s=0.05)
    assert snap.finished, f"run {run_id} still {snap.state} after {timeout_s}s: {snap.states}"
    assert time.monotonic() <= deadline + 5
    return snap


@pytest.fixture
def cli_env(worker_env: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(worker_env)
    env["PYTHONPATH"] = str(REPO)
    return env


def marked_processes(marker: str) -> list[dict[str, object]]:
    """Processes still alive whose environment carries ``CHORDFLOW_TEST_MARKER=marker`` (what a command left)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.environ().get("CHORDFLOW_TEST_MARKER") == marker:
                found.append(p.info)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found
