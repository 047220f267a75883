"""Unroutable work is loud: a task no live worker knows, or a queue nobody consumes, never waits in silence."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from orchestrator.client import Client
from orchestrator.embedded import WorkerProcess
from orchestrator.exitcodes import ExitCode
from orchestrator.keys import RUNS_INDEX
from orchestrator.settings import Settings
from tests.conftest import REPO
from tests.fault_report import record
from tests.integration.test_cli import chordflow

pytestmark = pytest.mark.usefixtures("worker")


def _toml(tmp_path: Path, uses: str, name: str = "lonely") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[pipeline]\nname = "{name}"\n[tasks.{name}]\nuses = "{uses}"\n')
    return path


def test_34_task_no_worker_knows_fails_fast_with_the_reason(
    tmp_path: Path, cli_env: dict[str, str], client: Client
) -> None:
    t0 = time.monotonic()
    proc = chordflow("run", str(_toml(tmp_path, "tests.unregistered_tasks.lonely")), env={**cli_env, "COLUMNS": "200"},
                     timeout=60)  # fmt: skip
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 2), out
    assert "no live worker on queue 'chordflow' has task 'tests.unregistered.lonely' registered" in proc.stderr
    assert "TaskNotRegistered" in out and "has no task 'tests.unregistered.lonely' registered" in out, out
    assert "Traceback" not in out
    record({"scenario": "34 task no live worker knows", "exit_code": proc.returncode,
            "seconds_to_clear_failure": round(elapsed, 3)})  # fmt: skip
    assert elapsed < 20


def test_34_refuse_unroutable_submits_nothing(
    tmp_path: Path, cli_env: dict[str, str], redis_client: redis.Redis
) -> None:
    before = redis_client.zcard(RUNS_INDEX)
    proc = chordflow("run", str(_toml(tmp_path, "tests.unregistered_tasks.lonely")),
                     env={**cli_env, "CHORDFLOW_REFUSE_UNROUTABLE": "true"}, timeout=60)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "nothing was submitted" in proc.stderr and "tests.unregistered.lonely" in proc.stderr
    assert redis_client.zcard(RUNS_INDEX) == before


def test_34_queue_nobody_consumes_is_named_while_the_run_waits(
    tmp_path: Path, cli_env: dict[str, str], client: Client
) -> None:
    proc = chordflow("run", str(_toml(tmp_path, "tests.unregistered_tasks.nowhere", "nowhere")), "--timeout", "7",
                     env=cli_env, timeout=60)  # fmt: skip
    assert "no live worker consumes queue 'nobody'" in proc.stderr  # at submit
    assert "waiting: queued" in proc.stderr, proc.stderr  # and again while it waits
    assert proc.returncode == ExitCode.TIMEOUT, proc.stdout + proc.stderr  # stopped waiting: the run goes on
    run_id = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("run "))
    assert client.cancel(run_id) == "cancelled"


def test_34_task_in_a_package_without_init_is_reported_not_dropped(
    tmp_path: Path, cli_env: dict[str, str], artifact_root: Path, redis_server
) -> None:
    """README's tour, done slightly wrong: tasks in ``tourpkg/shop/`` with no ``__init__.py``."""
    pkg = tmp_path / "tourpkg"
    (pkg / "shop").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "shop" / "steps.py").write_text(
        "from orchestrator import task\n\n@task(queue='tour')\ndef fetch() -> dict:\n    return {'ok': 1}\n"
    )
    env = {**cli_env, "PYTHONPATH": f"{cli_env['PYTHONPATH']}{os.pathsep}{tmp_path}", "COLUMNS": "200",
           "CHORDFLOW_TASK_MODULES": "tourpkg", "CHORDFLOW_ALLOWED_TASK_PREFIXES": "tasks.,tests.,tourpkg."}
    worker = WorkerProcess(redis_server.url, "tour@%h", 1, ["tour"], artifact_root / "logs" / "tour.log",
                           extra_env={k: v for k, v in env.items() if k.startswith(("CHORDFLOW_", "PYTHONPATH"))},
                           cwd=REPO).start()  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        client = Client(Settings(redis_url=redis_server.url))
        while not any("tour" in w.queues for w in client.fleet.live()) and time.monotonic() < deadline:
            time.sleep(0.1)
        t0 = time.monotonic()
        proc = chordflow("run", str(_toml(tmp_path, "tourpkg.shop.steps.fetch", "shop")), env=env, timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        worker.stop(grace_s=5)
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 2), out
    assert "has no task 'tourpkg.shop.steps.fetch' registered" in out and "__init__.py" in out, out
    assert elapsed < 20
    log = (artifact_root / "logs" / "tour.log").read_text(errors="replace")
    assert '"event": "task.unregistered"' in log
