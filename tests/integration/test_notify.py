"""Run-end notifications, end to end: real Redis, real Celery workers, a real HTTP receiver and a real
SMTP server (aiosmtpd), both on free loopback ports.

The notifications are sent by this module's own workers (queue ``notify-q``, a webhook secret, an
SMTP server, short backoffs); the session worker does not send any (``CHORDFLOW_NOTIFY_SENDER=false``
in conftest), so which worker holds a claim is known.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from aiosmtpd.controller import Controller

from orchestrator import Pipeline, keys
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess, free_port
from orchestrator.fleet import Fleet
from orchestrator.loader import load_pipeline
from orchestrator.settings import Settings
from tests.conftest import REPO, until
from tests.pipelines import gate, stamp

QUEUE = "notify-q"
SECRET = "whsec-test-" + uuid.uuid4().hex
TIMEOUT_S = 4.0  #: notify_timeout_s of the test workers; their claim lease is 2x this


# -- receivers --------------------------------------------------------------------------------------


class Receiver:
    """A real HTTP server recording every request; per path, a plan of answers (status codes, or "hang")."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.plans: dict[str, list[Any]] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    plan = receiver.plans.get(self.path.split("?")[0], [])
                    action = plan.pop(0) if plan else 200
                    receiver.requests.append({"path": self.path.split("?")[0], "headers": dict(self.headers),
                                              "body": body, "at": time.time(), "peer": self.client_address[1]})
                if action == "hang":
                    receiver.release.wait(60)
                    action = 200
                self.send_response(action)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"

    def to(self, addr: str) -> list[email.message.EmailMessage]:
        return [m for rcpts, m in self.messages if addr in rcpts]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def notify_env(worker_env: dict[str, str], mailbox: tuple[Mailbox, int]) -> dict[str, str]:
    return {
        **worker_env,
        "CHORDFLOW_NOTIFY_SENDER": "true",
        "CHORDFLOW_WEBHOOK_SECRET": SECRET,
        "CHORDFLOW_SMTP_HOST": "127.0.0.1",
        "CHORDFLOW_SMTP_PORT": str(mailbox[1]),
        "CHORDFLOW_SMTP_FROM": "chordflow@test.invalid",
        "CHORDFLOW_NOTIFY_TIMEOUT_S": str(TIMEOUT_S),
        "CHORDFLOW_NOTIFY_LEASE_S": "1",  # raised to 2 x notify_timeout_s by the notifier
        "CHORDFLOW_NOTIFY_BACKOFF_S": "0.2",
        "CHORDFLOW_NOTIFY_BACKOFF_MAX_S": "1",
        "CHORDFLOW_NOTIFY_RETRY_S": "30",
        "CHORDFLOW_DEFAULT_QUEUE": QUEUE,
    }


def _worker(name: str, redis_server: RedisServer, env: dict[str, str], root: Path) -> WorkerProcess:
    return WorkerProcess(redis_server.url, f"{name}@%h", concurrency=2, queues=[QUEUE],
                         log_path=root / "logs" / f"{name}.log", extra_env=env, cwd=REPO)  # fmt: skip


def _wait_live(r: redis.Redis, name: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(w.name.startswith(name + "@") for w in Fleet(r).live()):
            return
        time.sleep(0.1)
    pytest.fail(f"worker {name} did not come up")


@pytest.fixture(scope="module")
def notify_worker(
    redis_server: RedisServer, redis_client: redis.Redis, notify_env: dict[str, str], artifact_root: Path
) -> Iterator[WorkerProcess]:
    proc = _worker("notify-a", redis_server, notify_env, artifact_root).start()
    _wait_live(redis_client, "notify-a")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def nclient(settings: Settings, notify_worker: WorkerProcess) -> Client:
    return Client(settings.model_copy(update={"default_queue": QUEUE}))


def settled(client: Client, r: redis.Redis, run_id: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    """The run's notification records once its outbox entry is gone (every target delivered or failed)."""
    client.wait(run_id, timeout_s=timeout_s, poll_s=0.05)
    until(lambda: r.zscore(keys.NOTIFY, run_id) is None, timeout_s, f"outbox entry of {run_id} to go")
    return client.notifications(run_id)


def verify(req: dict[str, Any]) -> dict[str, Any]:
    """What a receiver does: recompute the signature over "<timestamp>.<body>" and compare."""
    h = {k.lower(): v for k, v in req["headers"].items()}
    expected = "sha256=" + hmac.new(SECRET.encode(), h["x-chordflow-timestamp"].encode() + b"." + req["body"],
                                    hashlib.sha256).hexdigest()  # fmt: skip
    assert hmac.compare_digest(h["x-chordflow-signature"], expected)
    return json.loads(req["body"])


def path() -> str:
    return f"/hook/{uuid.uuid4().hex[:12]}"


# -- webhook ----------------------------------------------------------------------------------------


def test_webhook_delivered_once_signed_with_masked_errors_and_no_params(
    nclient: Client, receiver: Receiver, redis_client: redis.Redis, cli_env: dict[str, str]
) -> None:
    p = path()
    url = receiver.url(p) + "?token=tok-" + uuid.uuid4().hex  # a token in the URL is never shown or recorded
    secret_url = "redis://:s3cr3t-pw-7731@db.internal/0"
    pipeline = (
        Pipeline("notify-webhook")
        .add_task(gate, name="gate", params={"flag": secret_url})  # fails; its message quotes the URL
        .add_task(stamp, name="ok", params={"tag": "canary-param-7731"})
        .add_task(stamp, name="after", depends_on=["gate"])
    )
    run_id = nclient.submit(pipeline, notify={"webhooks": [url]})
    records = settled(nclient, redis_client, run_id)
    reqs = until(lambda: receiver.at(p), 10, "the webhook")
    assert len(reqs) == 1
    req = reqs[0]
    payload = verify(req)
    h = {k.lower(): v for k, v in req["headers"].items()}
    meta = nclient.status(run_id, detail=False).meta
    key = f"{run_id}:{meta['finished_at']}"
    assert h["x-chordflow-event"] == "run.finished"
    assert h["x-chordflow-idempotency-key"] == key == payload["idempotency_key"]
    assert h["content-type"] == "application/json"
    assert abs(int(h["x-chordflow-timestamp"]) - time.time()) < 60
    assert payload["run_id"] == run_id and payload["pipeline"] == "notify-webhook" and payload["state"] == "failed"
    assert payload["tasks"] == {"total": 3, "counts": {"succeeded": 1, "failed": 1, "upstream_failed": 1}}
    assert payload["duration_s"] == pytest.approx(float(meta["finished_at"]) - float(meta["created_at"]), abs=1e-5)
    failed = {t["task"]: t for t in payload["failed_tasks"]}
    assert failed["gate"]["error"]["type"] == "RuntimeError"
    assert "redis://:***@db.internal/0" in failed["gate"]["error"]["message"]
    assert failed["after"]["state"] == "upstream_failed"
    text = req["body"].decode()
    assert "s3cr3t-pw-7731" not in text and "canary-param-7731" not in text  # never params or results
    # one attempt, recorded in the run, shown by `chordflow status --json` (the URL cut to its host)
    assert [(x["channel"], x["outcome"], x["attempt"], x["status"]) for x in records] == [
        ("webhook", "delivered", 1, 200)
    ]
    assert records[0]["key"] == key
    latency = req["at"] - float(meta["finished_at"])
    print(f"run end -> webhook received: {latency * 1000:.1f} ms")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", run_id, "--json"], env=cli_env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["notifications"][0]["outcome"] == "delivered"
    assert status["meta"]["notify"]["webhooks"] == [f"http://127.0.0.1:{receiver.port}/..."]
    assert "tok-" not in proc.stdout and "s3cr3t-pw-7731" not in proc.stdout
    assert redis_client.ttl(keys.run_notifications(run_id)) > 0


def test_only_the_states_asked_for_are_notified(nclient: Client, receiver: Receiver, redis_client: redis.Redis) -> None:
    p = path()
    run_id = nclient.submit(Pipeline("notify-on").add_task(stamp), notify={"webhooks": [receiver.url(p)],
                                                                         "on": ["failed"]})  # fmt: skip
    assert settled(nclient, redis_client, run_id) == []
    assert receiver.at(p) == []


def test_receiver_down_then_up_is_retried_and_every_attempt_recorded(
    nclient: Client, redis_client: redis.Redis
) -> None:
    port = free_port()  # nothing listens there yet: connection refused
    p = path()
    url = f"http://127.0.0.1:{port}{p}"
    run_id = nclient.submit(Pipeline("notify-outage").add_task(stamp), notify={"webhooks": [url]})
    nclient.wait(run_id, timeout_s=60, poll_s=0.05)
    until(lambda: len(nclient.notifications(run_id)) >= 2, 30, "two refused attempts")
    late = Receiver(port)  # the receiver comes back, answering 500 twice, then 200
    up_at = time.time()
    try:
        late.plans[p] = [500, 500]
        records = settled(nclient, redis_client, run_id)
        reqs = until(lambda: late.at(p) if len(late.at(p)) == 3 else None, 30, "three requests")
    finally:
        late.close()
    outcomes = [x["outcome"] for x in records]
    assert outcomes[-1] == "delivered" and set(outcomes[:-1]) == {"retrying"}, records
    assert [x["attempt"] for x in records] == list(range(1, len(records) + 1))
    refused = [x for x in records if x["status"] is None]
    assert len(refused) >= 2 and all("Refused" in x["detail"] for x in refused), records
    assert [x["status"] for x in records[-3:]] == [500, 500, 200]
    assert all(x["next_at"] > x["at"] for x in records[:-1])
    late_by = [b["at"] - a["next_at"] for a, b in zip(records, records[1:], strict=False)]
    assert max(late_by) < 1.0, late_by  # each retry starts when its backoff ends, not at the next sweep
    keys_seen = {r["headers"]["X-Chordflow-Idempotency-Key"] for r in reqs}
    assert keys_seen == {records[0]["key"]}  # every retry is the same notification
    for req in reqs:
        verify(req)  # re-signed with a fresh timestamp each time
    print(f"receiver back -> delivered: {(reqs[-1]['at'] - up_at) * 1000:.0f} ms, {len(records)} attempts")


@pytest.mark.parametrize("status", [404, 401])
def test_4xx_is_final_recorded_failed_and_not_retried(
    status: int, nclient: Client, receiver: Receiver, redis_client: redis.Redis
) -> None:
    p = path()
    receiver.plans[p] = [status] * 10
    run_id = nclient.submit(Pipeline("notify-4xx").add_task(stamp), notify={"webhooks": [receiver.url(p)]})
    records = settled(nclient, redis_client, run_id)
    assert [(x["outcome"], x["status"]) for x in records] == [("failed", status)]
    time.sleep(1.5)  # longer than the longest backoff: a retry would have come
    assert len(receiver.at(p)) == 1


def test_429_is_retried(nclient: Client, receiver: Receiver, redis_client: redis.Redis) -> None:
    p = path()
    receiver.plans[p] = [429]
    run_id = nclient.submit(Pipeline("notify-429").add_task(stamp), notify={"webhooks": [receiver.url(p)]})
    records = settled(nclient, redis_client, run_id)
    assert [(x["outcome"], x["status"]) for x in records] == [("retrying", 429), ("delivered", 200)]


def test_a_retried_run_is_notified_again_under_a_new_key(
    nclient: Client, receiver: Receiver, redis_client: redis.Redis
) -> None:
    p, flag = path(), f"tests:notify-gate:{uuid.uuid4().hex}"
    pipeline = Pipeline("notify-retry").add_task(gate, params={"flag": flag})
    run_id = nclient.submit(pipeline, notify={"webhooks": [receiver.url(p)]})
    settled(nclient, redis_client, run_id)
    redis_client.set(flag, "1", ex=300)
    assert nclient.retry(run_id) == 1
    records = settled(nclient, redis_client, run_id)
    reqs = until(lambda: receiver.at(p) if len(receiver.at(p)) == 2 else None, 10, "two webhooks")
    first, second = (verify(r) for r in reqs)
    assert (first["state"], second["state"]) == ("failed", "succeeded")
    assert first["idempotency_key"] != second["idempotency_key"]
    assert [x["key"] for x in records] == [first["idempotency_key"], second["idempotency_key"]]


# -- e-mail -----------------------------------------------------------------------------------------


def test_email_from_toml_and_per_run_received_with_subject_and_body(
    nclient: Client, mailbox: tuple[Mailbox, int], redis_client: redis.Redis, tmp_path: Path
) -> None:
    box, _ = mailbox
    team, me = f"team-{uuid.uuid4().hex[:6]}@example.com", f"me-{uuid.uuid4().hex[:6]}@example.com"
    toml = tmp_path / "mail.toml"
    toml.write_text(
        '[pipeline]\nname = "etl-mail"\n\n[tasks.nap]\nuses = "tests.pipelines.stamp"\nparams = { fail = true }\n\n'
        f'[notify]\nemails = ["{team}"]\n',
        encoding="utf-8",
    )
    pipeline = load_pipeline(toml, ("tests.",))
    run_id = nclient.submit(pipeline, notify={"emails": [me]})  # adds to the pipeline's [notify]
    records = settled(nclient, redis_client, run_id)
    assert sorted((x["target"], x["outcome"]) for x in records) == sorted([(team, "delivered"), (me, "delivered")])
    for addr in (team, me):
        (msg,) = until(lambda a=addr: box.to(a), 10, f"mail to {addr}")
        assert msg["Subject"] == f"[chordflow] etl-mail {run_id}: failed"
        assert msg["From"] == "chordflow@test.invalid"
        assert msg["X-Chordflow-Idempotency-Key"] == records[0]["key"]
        body = msg.get_content()
        assert f"Run {run_id} of pipeline 'etl-mail' ended: failed." in body
        assert "nap: failed: RuntimeError: nap failed on purpose" in body


# -- nobody watching --------------------------------------------------------------------------------


def test_notification_sent_after_the_submitting_process_exited(
    nclient: Client, receiver: Receiver, cli_env: dict[str, str], tmp_path: Path
) -> None:
    p = path()
    toml = tmp_path / "slow.toml"
    toml.write_text('[pipeline]\nname = "detached"\n\n[tasks.nap]\nuses = "tests.pipelines.stamp"\n'
                    'params = { seconds = 2.0 }\n', encoding="utf-8")  # fmt: skip
    env = {**cli_env, "CHORDFLOW_DEFAULT_QUEUE": QUEUE}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(toml), "--detach",
                           "--notify-webhook", receiver.url(p)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    exited_at = time.time()
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    assert receiver.at(p) == []  # the submitter is gone before the run ends
    (req,) = until(lambda: receiver.at(p), 60, "the webhook of the detached run")
    assert req["at"] > exited_at
    assert verify(req)["run_id"] == run_id


# -- a worker dies holding the claim ----------------------------------------------------------------


def test_worker_killed_while_delivering_another_delivers_same_key(
    nclient: Client, receiver: Receiver, redis_server: RedisServer, redis_client: redis.Redis,
    notify_worker: WorkerProcess, notify_env: dict[str, str], artifact_root: Path,
) -> None:  # fmt: skip
    other = _worker("notify-b", redis_server, notify_env, artifact_root).start()
    try:
        _wait_live(redis_client, "notify-b")
        p = path()
        receiver.plans[p] = ["hang"]  # the first delivery hangs: its worker holds the claim
        run_id = nclient.submit(Pipeline("notify-kill").add_task(stamp), notify={"webhooks": [receiver.url(p)]})
        (first,) = until(lambda: receiver.at(p), 60, "the first delivery")
        holder = until(lambda: _holder([notify_worker, other], first["peer"]), 2, "the worker holding it")
        claimed = redis_client.zscore(keys.NOTIFY, run_id)
        os.killpg(os.getpgid(holder.proc.pid), signal.SIGKILL)
        holder.proc.wait(10)
        killed_at = time.time()
        (_, second) = until(lambda: receiver.at(p) if len(receiver.at(p)) == 2 else None, 30, "redelivery")
        records = settled(nclient, redis_client, run_id)
        assert first["headers"]["X-Chordflow-Idempotency-Key"] == second["headers"]["X-Chordflow-Idempotency-Key"]
        assert [x["outcome"] for x in records] == ["delivered"]
        assert records[0]["worker"].endswith(f":{(other if holder is notify_worker else notify_worker).proc.pid}")
        assert second["at"] >= claimed / 1000 - 0.5  # not before the dead worker's lease ran out
        print(f"holder killed -> redelivered: {(second['at'] - killed_at) * 1000:.0f} ms (lease {2 * TIMEOUT_S:g} s)")
    finally:
        receiver.release.set()
        other.stop()
        if not notify_worker.alive:  # the module's worker was the one killed: bring it back
            notify_worker.stop()
            notify_worker.start()
            _wait_live(redis_client, "notify-a")


def _holder(workers: list[WorkerProcess], peer_port: int) -> WorkerProcess | None:
    """The worker whose main process owns the TCP connection from ``peer_port``."""
    for w in workers:
        assert w.proc is not None
        for conn in psutil.Process(w.proc.pid).net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == peer_port:
                return w
    return None


# -- bad config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notify", "field", "message"),
    [
        ('webhooks = ["ftp://example.com/x"]', "notify.webhooks.0", "is not an http(s) URL"),
        ('emails = ["ops@example.com", "not an address"]', "notify.emails.1", "is not a plain e-mail address"),
        ('on = ["running"]', "notify.on", "'running' is not a state a run ends in"),
        ('webhook = ["https://example.com/"]', "notify.webhook", "unknown field"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_notify_table_exits_2_naming_file_and_field(
    command: str, notify: str, field: str, message: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    toml = tmp_path / "bad_notify.toml"
    toml.write_text(f'[pipeline]\nname = "x"\n\n[tasks.a]\nuses = "tests.pipelines.noop"\n\n[notify]\n{notify}\n',
                    encoding="utf-8")  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", command, str(toml)], env=cli_env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{toml}: field '{field}': " in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_notify_option_exits_2_before_anything_is_written(cli_env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(REPO / "tests/data/ok.toml"),
                           "--notify-email", "x@y", "--notify-email", "bad\nBcc: a@b"], env=cli_env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "field 'notify.emails.1'" in proc.stderr and "is not a plain e-mail address" in proc.stderr
