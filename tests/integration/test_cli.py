"""The ``chordflow`` command as a user runs it: a subprocess, exit codes, messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from orchestrator import Pipeline, keys
from orchestrator.client import Client
from orchestrator.keys import REAPER_LOCK
from tests.conftest import REPO, marked_processes
from tests.fault_report import record
from tests.pipelines import stamp

DATA = REPO / "tests" / "data"


SCENARIOS = {
    "cycle.toml": "19 cyclic DAG",
    "bad_params.toml": "21 invalid params",
    "type_mismatch.toml": "21 upstream type mismatch",
    "missing_dep.toml": "20 missing dependency",
    "unknown_import.toml": "20 unknown import path",
    "duplicate.toml": "20 duplicate name",
}


def keyspace(r: redis.Redis) -> set[str]:
    """chordflow's keys (runs, indexes), minus what live workers keep up on their own schedule (reaper lock,
    worker registry, the give-back's first-seen marks, the retry due index), and the task log lists, which
    workers write a moment after an earlier test's run ended (workers/log_sink.py). kombu's own keys
    (queues, ``unacked``) change whenever a worker acks an earlier test's message, so they are not compared."""
    live = {REAPER_LOCK, keys.WORKERS, keys.WORKERS_SEEN, keys.UNACKED_SEEN, keys.DUE}
    return {k for k in r.scan_iter(match=f"{keys.PREFIX}:*", count=1000) if "}:logs:" not in k} - live


def chordflow(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("cycle.toml", "dependency cycle: a -> b -> c -> a"),
        ("missing_dep.toml", "task 'a': depends on unknown task 'nowhere'"),
        ("bad_params.toml", "task 'number': field 'params.value': Input should be a valid integer"),
        ("unknown_import.toml", "task 'c': field 'uses': 'os.system' is outside the allowed task packages"),
        ("type_mismatch.toml", "task 'double': input 'number' expects Count but task 'number' returns Stamp"),
        ("duplicate.toml", "invalid TOML: Cannot declare ('tasks', 'a') twice"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_invalid_pipeline_exits_2_with_clear_message_and_redis_untouched(
    command: str, file: str, message: str, cli_env: dict[str, str], redis_client: redis.Redis
) -> None:
    before = keyspace(redis_client)
    proc = chordflow(command, str(DATA / file), env=cli_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert keyspace(redis_client) == before
    scenario = SCENARIOS[file]
    record({"scenario": f"{scenario} ({command})", "exit_code": proc.returncode, "named": message in proc.stderr,
            "keyspace_changed": keyspace(redis_client) != before})  # fmt: skip


def test_validate_ok_files(cli_env: dict[str, str]) -> None:
    proc = chordflow("validate", "tasks/etl/pipeline.toml", str(DATA / "ok.toml"), env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "tasks/etl/pipeline.toml: ok (7 tasks)" in proc.stdout


def test_dry_run_prints_plan_and_dispatches_nothing(cli_env: dict[str, str], redis_client: redis.Redis) -> None:
    before = keyspace(redis_client)
    proc = chordflow("run", "tasks/etl/pipeline.toml", "--dry-run", env={**cli_env, "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    assert (
        "chain(tasks.etl.ingest.ingest.si(run_id, 'ingest'), tasks.etl.clean.clean.si(run_id, 'clean'))" in proc.stdout
    )
    assert "join: counter of 2 parents (daily_revenue, join)" in proc.stdout
    assert "nothing was dispatched" in proc.stdout
    assert keyspace(redis_client) == before


@pytest.mark.usefixtures("worker")
def test_run_success_then_status_and_runs(cli_env: dict[str, str]) -> None:
    proc = chordflow("run", str(DATA / "ok.toml"), "--param", "number.value=21", env=cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = re.search(r"run (\d{8}-\d{6}-[0-9a-f]{6})", proc.stdout).group(1)
    assert "succeeded" in proc.stdout
    assert 'double -> {"value": 42}' in proc.stdout

    status = chordflow("status", run_id, "--json", env=cli_env)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["state"] == "succeeded"
    assert data["tasks"]["double"]["state"] == "succeeded" and data["tasks"]["double"]["attempts"] == 1

    runs = chordflow("runs", "--limit", "50", env={**cli_env, "COLUMNS": "200"})
    assert runs.returncode == 0 and run_id in runs.stdout


@pytest.mark.usefixtures("worker")
def test_run_with_failed_task_exits_nonzero_and_shows_what_failed(cli_env: dict[str, str], artifact_root: Path) -> None:
    proc = chordflow("run", str(DATA / "failing.toml"), env={**cli_env, "COLUMNS": "200"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run_id = re.search(r"run (\d{8}-\d{6}-[0-9a-f]{6})", proc.stdout).group(1)
    out = proc.stdout
    assert re.search(r"bad\s+│ failed", out) and re.search(r"after_bad\s+│ upstream_failed", out)
    assert re.search(r"good\s+│ succeeded", out) and re.search(r"cleanup\s+│ succeeded", out)
    assert "RuntimeError: bad failed on purpose" in out
    report = json.loads((artifact_root / "errors" / run_id / "bad-1.json").read_text())
    assert report["error"]["type"] == "RuntimeError" and report["task"] == "bad"
    lines = [json.loads(x) for x in (artifact_root / "failed_tasks.log").read_text().splitlines()]
    assert any(x["run_id"] == run_id and x["task"] == "bad" for x in lines)


@pytest.mark.usefixtures("worker")
def test_detach_returns_run_id_at_once(cli_env: dict[str, str], client: Client) -> None:
    proc = chordflow("run", str(DATA / "ok.toml"), "--detach", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", run_id)
    assert client.wait(run_id, timeout_s=30).state == "succeeded"


def test_bad_param_override_and_unknown_run(cli_env: dict[str, str]) -> None:
    proc = chordflow("run", str(DATA / "ok.toml"), "--param", "nosuch.value=1", env=cli_env)
    assert proc.returncode == 2 and "pipeline has no task 'nosuch'" in proc.stderr
    proc = chordflow("run", str(DATA / "ok.toml"), "--param", "number.value=abc", env=cli_env)
    assert proc.returncode == 2 and "task 'number': field 'params.value'" in proc.stderr
    proc = chordflow("status", "20990101-000000-abcdef", env=cli_env)
    assert proc.returncode == 2 and "no run '20990101-000000-abcdef'" in proc.stderr


def test_unreachable_redis_is_a_clear_error(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "CHORDFLOW_REDIS_URL": "redis://:secretpw@127.0.0.1:1/0"}
    proc = chordflow("run", str(DATA / "ok.toml"), env=env)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in proc.stderr
    assert "secretpw" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.usefixtures("worker")
def test_cancel_ends_the_run_cancelled(cli_env: dict[str, str], client: Client, redis_client: redis.Redis) -> None:
    p = (
        Pipeline("to-cancel")
        .add_task(stamp, name="slow", params={"seconds": 3})
        .add_task(stamp, name="next", depends_on=["slow"])
    )
    run_id = client.submit(p)
    deadline = time.monotonic() + 20
    while client.status(run_id).states.get("slow") != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    proc = chordflow("cancel", run_id, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    snap = client.wait(run_id, timeout_s=20)
    assert snap.state == "cancelled"
    assert snap.states == {"slow": "cancelled", "next": "cancelled"}
    time.sleep(3.5)  # the terminated attempt must not resurrect anything
    assert client.status(run_id).states == {"slow": "cancelled", "next": "cancelled"}
    assert redis_client.hget(f"tests:executions:{run_id}", "next") is None


def test_demo_path_embedded_end_to_end_leaves_no_process(tmp_path: Path) -> None:
    """`make demo`'s command with no Redis configured: private Redis + workers, success, clean exit."""
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORDFLOW_")}
    env.update(
        CHORDFLOW_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        CHORDFLOW_STATE_DIR=str(tmp_path / "state"),
        CHORDFLOW_TEST_MARKER=marker,
        CHORDFLOW_FORCE_PROGRESS="1",
        C_FORCE_ROOT="1",
        COLUMNS="200",
    )
    proc = chordflow("run", "tasks/etl/pipeline.toml", env=env, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "starting a private Redis and local workers" in proc.stdout
    assert re.search(r"run \S+ succeeded in", proc.stdout)
    assert "daily_revenue" in proc.stdout and "━" in proc.stdout  # progress bars were drawn
    reports = list((tmp_path / "artifacts" / "etl" / "report").rglob("report.md"))
    assert len(reports) == 1 and "Sales orders report" in reports[0].read_text()
    # Then nothing it started is still alive
    time.sleep(0.5)
    assert marked_processes(marker) == []
