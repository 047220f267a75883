"""Issue 8: no input stalls a worker, and no secret leaks (real Redis, real workers, real Flower).

One worker of our own consumes the ``secrets`` queue with task events on, DEBUG logs (Celery's
and chordflow's) and a short lease, so a redaction that held the GIL for a few seconds would lose
its lease; a real event receiver and a real Flower watch it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess, free_port, terminate_group
from orchestrator.keys import run_keys
from orchestrator.redact import MASK, Masker
from orchestrator.settings import Settings
from tests.conftest import REPO, until
from tests.integration.test_cli import chordflow
from tests.secret_tasks import QUEUE, BigConfig, big, canary

FLOWER_AUTH = ("flower", f"fl-{uuid.uuid4().hex[:8]}")


class Events:
    """A real Celery event receiver on its own connection, in a thread."""

    def __init__(self, settings: Settings) -> None:
        from workers.app import create_app

        self.app = create_app(settings)
        self.seen: list[dict[str, Any]] = []
        self._conn = self.app.connection_for_read()
        self.receiver = self.app.events.Receiver(self._conn, handlers={"*": self.seen.append})
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception:  # the connection closed under it at stop()
            pass

    def start(self) -> Events:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.receiver.should_stop = True
        self._thread.join(5)
        self._conn.release()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.seen) if e.get("type") == kind]


class Flower:
    """``celery flower`` with basic auth on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={self.port}",
                 "--address=127.0.0.1", f"--basic-auth={FLOWER_AUTH[0]}:{FLOWER_AUTH[1]}"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def get(self, path: str) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        token = base64.b64encode(f"{FLOWER_AUTH[0]}:{FLOWER_AUTH[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def tasks(self) -> dict[str, Any]:
        try:
            return self.get("/api/tasks")
        except OSError:
            return {}

    def stop(self) -> None:
        terminate_group(self.proc, grace_s=5)


class Stack:
    def __init__(self, root: Path, worker: WorkerProcess, events: Events, flower: Flower, env: dict[str, str]):
        self.root, self.worker, self.events, self.flower, self.env = root, worker, events, flower, env

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.root / "logs").glob("*"))


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, client: Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("secrets")
    (root / "logs").mkdir()
    env = {
        **os.environ,
        "CHORDFLOW_REDIS_URL": redis_server.url,
        "CHORDFLOW_TASK_MODULES": "tests.secret_tasks",
        "CHORDFLOW_ALLOWED_TASK_PREFIXES": "tests.",
        "CHORDFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "CHORDFLOW_PROGRESS_INTERVAL_S": "0",
        "CHORDFLOW_TASK_EVENTS": "true",
        "CHORDFLOW_LOG_LEVEL": "DEBUG",
        "CHORDFLOW_LOG_FILE": str(root / "logs" / "chordflow.jsonl"),
        "CHORDFLOW_LEASE_S": "3",  # renewed every second: a GIL held for 3 s loses it
        "CHORDFLOW_REAPER_INTERVAL_S": "0.5",
        "C_FORCE_ROOT": "1",
        "PYTHONPATH": str(REPO),
    }
    events = Events(client.settings).start()
    flower = Flower(env, root / "logs" / "flower.log")
    worker = WorkerProcess(
        redis_server.url, "secrets-worker@%h", concurrency=2, queues=[QUEUE],
        log_path=root / "logs" / "worker.log", extra_env=env, cwd=REPO,
        prefix=["sh", "-c", 'exec "$@" --loglevel DEBUG', "sh"],  # the last --loglevel wins
    ).start()  # fmt: skip
    s = Stack(root, worker, events, flower, env)
    try:
        # warm up until the worker consumes and both the receiver and Flower see its events
        for _ in range(5):
            run_id = client.submit(Pipeline("secrets-warmup").add_task(big, params={"blob": "small"}))
            assert client.wait(run_id, timeout_s=60).state == "succeeded", s.logs()[-3000:]
            try:
                until(lambda: events.of("task-succeeded") and flower.tasks(), 10, "events")
                break
            except pytest.fail.Exception:
                continue
        else:
            pytest.fail(f"no events reached the receiver/Flower: {s.logs()[-3000:]}")
        yield s
    finally:
        worker.stop()
        flower.stop()
        events.stop()


def _lost(redis_client: redis.Redis, run_id: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    k = run_keys(run_id)
    return [json.loads(x) for x in redis_client.lrange(k.attempt_log, 0, -1)], redis_client.hgetall(k.lost)


def test_10mb_param_and_1mb_message_never_stall_the_lease(
    stack: Stack, client: Client, redis_client: redis.Redis
) -> None:
    # 10 MB of the worst text for URL masking: letters/digits (a backtracking regex is quadratic on
    # them) then URL credentials (the most spans a linear scan can meet)
    blob = "a1" * 2_500_000 + "a://b:c@" * 625_000
    params = {"blob": blob}
    message = "x" * 500_000 + ("a://b:" + "x" * 7) * (500_000 // 13)  # as tests.secrets.big raises it
    # the redaction calls the runner makes on these inputs, timed here
    started = time.perf_counter()
    masker = Masker.for_model(BigConfig).with_params(params, BigConfig)
    masker.data({"params": params, "upstream": {}})
    masker.text(message, 2000)
    redaction_s = time.perf_counter() - started
    assert redaction_s < 1.0, redaction_s

    ok = client.submit(Pipeline("big-param").add_task(big, params=params))
    bad = client.submit(Pipeline("big-message").add_task(big, params={"blob": "x", "fail_message_chars": 1_000_000}))
    for run_id, state in ((ok, "succeeded"), (bad, "failed")):
        snap = client.wait(run_id, timeout_s=120, poll_s=0.1)
        assert snap.state == state, (snap.states, snap.errors)
        log, lost = _lost(redis_client, run_id)
        assert [e["outcome"] for e in log] == [state], log  # one attempt, never reaped or re-run
        assert lost == {} and snap.attempts == {"big": "1"}
        assert "WorkerLost" not in json.dumps(snap.errors)
    error = json.loads(client.status(bad).errors["big"])
    assert error["type"] == "ValueError" and len(error["message"]) <= 2003
    deadline = time.monotonic() + 10  # artifacts are written by the worker's writer thread, just after the settle
    while not (found := list(stack.artifacts.glob(f"*/big/v*/{ok}/metadata.json"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    metadata = json.loads(found[0].read_text())
    assert len(metadata["params"]["blob"]) <= 503 and "b:c@" not in metadata["params"]["blob"]


def _canaries() -> dict[str, str]:
    def c(form: str) -> str:
        return f"cnry{form}{uuid.uuid4().hex[:12]}"

    return {
        "top": c("top"), "nested": c("nested"), "listed": c("listed"), "dict": c("dict"), "bytes": c("bytes"),
        "log": c("log"), "retry": c("retry"), "url_a": c("urla"), "url_b": c("urlb"),
        "url_c": f"{c('urlc1')} {c('urlc2')}", "url_d": f"{c('urld1')}/{c('urld2')}",
    }  # fmt: skip


def _fragments(canaries: dict[str, str]) -> dict[str, str]:
    """Each canary and each part of one with a space or '/' (a half-masked password is a leak)."""
    out = {}
    for form, value in canaries.items():
        out[form] = value
        for i, part in enumerate(value.replace("/", " ").split()):
            out[f"{form}[{i}]"] = part
    return out


def _redis_dump(r: redis.Redis, skip: set[str]) -> dict[str, str]:
    out = {}
    for key in r.scan_iter(count=1000):
        if key in skip:
            continue
        read = {"string": r.get, "hash": r.hgetall, "list": lambda k: r.lrange(k, 0, -1), "set": r.smembers,
                "zset": lambda k: r.zrange(k, 0, -1), "stream": r.xrange}.get(r.type(key))  # fmt: skip
        out[key] = json.dumps(read(key) if read else None, default=str)
    return out


def test_canary_secrets_appear_nowhere(
    stack: Stack, client: Client, redis_client: redis.Redis, cli_env: dict[str, str]
) -> None:
    cn = _canaries()
    params = {
        "api_key": cn["top"],
        "nested": {"inner": {"value": cn["nested"]}, "many": [{"value": cn["listed"]}], "by_name": {"x": cn["dict"]}},
        "blob": cn["bytes"],
        "log_value": cn["log"],
        "retry_value": cn["retry"],
        "url_a": f"redis://:{cn['url_a']}@db.example:6379/0",
        "url_b": f"redis://{cn['url_b']}@db.example:6379/0",
        "url_c": f"redis://user:{cn['url_c']}@db.example:6379/0",
        "url_d": f"redis://user:{cn['url_d']}@db.example:6379/0",
    }
    pipeline = (
        Pipeline("canary")
        .add_task(canary, name="leaky", params=params)
        .add_task(canary, name="fine", params={**params, "fail_always": False})
    )
    run_id = client.submit(pipeline)
    snap = client.wait(run_id, timeout_s=120, poll_s=0.1)
    assert snap.states == {"leaky": "failed", "fine": "succeeded"}, snap.errors
    assert snap.attempts == {"leaky": "2", "fine": "2"}  # both went through the retry path
    until(lambda: len(stack.events.of("task-retried")) >= 2 and len(stack.events.of("task-failed")) >= 1
           and len(stack.events.of("task-succeeded")) >= 2, 20, "retry/fail/success events")  # fmt: skip
    flower_tasks = until(
        lambda: (t := stack.flower.tasks()) and sum(v.get("state") == "FAILURE" for v in t.values()) >= 1 and t,
        20, "Flower to show the failure",
    )  # fmt: skip
    failed_ids = [k for k, v in flower_tasks.items() if v.get("state") == "FAILURE"]
    flower_info = [stack.flower.get(f"/api/task/info/{i}") for i in failed_ids]

    commands = (("status", run_id), ("status", run_id, "--json"), ("runs",))
    cli = {args: chordflow(*args, env=cli_env) for args in commands}
    for args, proc in cli.items():
        assert proc.returncode in (0, 1), (args, proc.stdout, proc.stderr)
    stack.worker.stop()  # flushes the log and artifact writer before we read them
    files = {str(p.relative_to(stack.root)): p.read_text(errors="replace") for p in stack.root.rglob("*")
             if p.is_file()}  # fmt: skip
    # The nodes hash holds the params a worker must read, so the secrets are there by design
    # (docs/SECURITY.md "Limits": protect Redis); every other key of the run is checked.
    redis_keys = _redis_dump(redis_client, skip={run_keys(run_id).nodes})
    sinks = {
        **{f"file {name}": text for name, text in files.items()},
        "celery events": json.dumps(stack.events.seen, default=str),
        "flower /api/tasks": json.dumps(flower_tasks),
        "flower /api/task/info": json.dumps(flower_info),
        **{f"redis {key}": value for key, value in redis_keys.items()},
        **{f"cli {' '.join(a)}": p.stdout + p.stderr for a, p in cli.items()},
    }
    leaks = {(form, sink) for form, value in _fragments(cn).items() for sink, text in sinks.items() if value in text}
    assert not leaks, sorted(leaks)

    # and the sinks really were looked at: what should be there is, masked
    logs = stack.logs()
    for expected in ("canary.debug", "canary.info", "canary.warning", "canary.error", "canary.exception",
                     "Retry in", "TaskFailed"):  # fmt: skip
        assert expected in logs, expected
    retried = stack.events.of("task-retried")
    assert all("TaskFailed" in e["exception"] and MASK in e["exception"] for e in retried), retried
    report = next(v for k, v in files.items() if k.startswith(f"artifacts/errors/{run_id}/"))
    assert MASK in report and "db.example" in report
    assert run_id in files["artifacts/failed_tasks.log"]
    assert any(k.endswith(f"{run_id}/metadata.json") for k in files)
    assert "leaky" in cli[("status", run_id, "--json")].stdout and MASK in cli[("status", run_id, "--json")].stdout


@pytest.mark.parametrize("form", ["u:{c}/x", "u:a/{c}", ":{c}", "{c}", "u:p w{c}"])
def test_redis_url_credentials_never_printed(form: str, cli_env: dict[str, str]) -> None:
    """An unparsable URL (unencoded '/') is a clear error, and no URL form prints its password."""
    secret = f"cnry{uuid.uuid4().hex[:12]}"
    userinfo = form.format(c=secret)
    env = {**cli_env, "CHORDFLOW_REDIS_URL": f"redis://{userinfo}@127.0.0.1:{free_port()}/0"}
    proc = chordflow("status", "20260101-000000-abcdef", env=env)
    out = proc.stdout + proc.stderr
    assert secret[4:] not in out, out
    assert "Traceback" not in out
    if "/" in userinfo:
        assert proc.returncode == 2 and "cannot be parsed" in out and "percent-encode" in out, out
    elif ":" not in userinfo:  # redis://SECRET@host names a user and no password: refused as unauthenticated
        assert proc.returncode == 2 and "has no password" in out, out
    else:
        assert proc.returncode == 4 and "cannot reach Redis" in out, out
