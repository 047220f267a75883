"""Several hosts on one machine (RELIABILITY #15, #29): workers in network namespaces made by the test.

Topology: netns ``w1`` joined to the root namespace by a veth pair; Redis
binds the root side's address. Cutting the veth link is a network partition
between host w1 and Redis.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, WorkerProcess
from orchestrator.settings import Settings
from tests.conftest import REPO
from tests.fault_tasks import QUEUE, block
from tests.faults.conftest import FAULT_ENV, figures, probe_events, record, wait_for_event


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Host:
    """A network namespace with one veth link to the root namespace."""

    def __init__(self, index: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = f"cf{tag}"
        self.host_if, self.ns_if = f"cfh{tag}", f"cfn{tag}"
        self.subnet = f"10.231.{index}"
        self.gateway = f"{self.subnet}.1"  # root side: where Redis listens
        self.address = f"{self.subnet}.2"

    def create(self) -> Host:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.address}/24", "dev", self.ns_if)
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        return self

    def cut(self) -> None:
        sh("ip", "link", "set", self.host_if, "down")

    def heal(self) -> None:
        sh("ip", "link", "set", self.host_if, "up")

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]


@pytest.fixture
def host_w1() -> Iterator[Host]:
    assert shutil.which("ip"), "iproute2 is required for multi-host tests (.ci/run installs it)"
    host = Host(index=int(uuid.uuid4().int % 200) + 20).create()
    try:
        yield host
    finally:
        host.destroy()


@pytest.fixture
def net_redis(host_w1: Host, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", bind=f"{host_w1.gateway} 127.0.0.1").start()
    yield server
    server.stop()


def _worker(server: RedisServer, name: str, tmp: Path, prefix: list[str] | None = None) -> WorkerProcess:
    env = {**FAULT_ENV, "CHORDFLOW_ARTIFACT_ROOT": str(tmp / "artifacts")}
    return WorkerProcess(server.url, f"{name}@%h", 1, [QUEUE], tmp / f"{name}.log", extra_env=env, cwd=REPO,
                         prefix=prefix).start()  # fmt: skip


def test_15_worker_cut_off_past_its_lease(host_w1: Host, net_redis: RedisServer, tmp_path: Path) -> None:
    """w1 (own netns) runs a task; its link goes down for 2x the lease: w2 reruns it, w1's late result is refused."""
    client = Client(Settings(redis_url=SecretStr(net_redis.url), artifact_root=tmp_path / "artifacts"))
    r = redis.Redis.from_url(net_redis.url, decode_responses=True)
    w1 = _worker(net_redis, "w1", tmp_path, prefix=host_w1.prefix)
    w2 = None
    try:
        flag = f"tests:flag:{uuid.uuid4().hex}"
        p = Pipeline("partition").add_task(block, name="victim", params={"flag": flag}).add_task(
            block, name="down", depends_on=["victim"])  # fmt: skip
        run_id = client.submit(p)
        first = wait_for_event(r, run_id, "victim", "start", timeout_s=60)
        assert client.status(run_id).hosts["victim"].startswith("w1@")
        w2 = _worker(net_redis, "w2", tmp_path)
        host_w1.cut()
        t_cut = time.time()
        r.set(flag, 1)
        time.sleep(2 * 1.5)  # 2x lease
        snap = client.wait(run_id, timeout_s=60, poll_s=0.1)
        host_w1.heal()
        t_heal = time.monotonic()
        starts = [e for e in probe_events(r, run_id) if e["task"] == "victim" and e["phase"] == "start"]
        assert snap.state == "succeeded", snap.states
        assert snap.hosts["victim"].startswith("w2@") and len(starts) == 2 and starts[0] == first
        # w1's attempt finishes after the heal; its settle is refused (stale), the result stays w2's
        deadline = time.monotonic() + 30
        log1 = tmp_path / "w1.log"
        while "task.result_discarded" not in log1.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "task.result_discarded" in log1.read_text(errors="replace")
        assert client.results(run_id)["victim"]["pid"] != int(first["pid"])
        # and w1 reconnects by itself: with w2 gone, a new run completes on w1 alone
        w2.stop(grace_s=5)
        w2 = None
        again = client.submit(Pipeline("after-heal").add_task(block, name="x"))
        assert client.wait(again, timeout_s=60, poll_s=0.1).state == "succeeded"
        assert client.status(again).hosts["x"].startswith("w1@")
        fig = figures(client, r, run_id, "15 worker network cut past lease", faulted={"victim"},
                      recover_s=round(float(starts[1]["at"]) - t_cut, 3),
                      w1_reconnect_s=round(time.monotonic() - t_heal, 3))  # fmt: skip
        assert fig["lost"] == 0 and fig["double_trigger"] == 0 and fig["extra_exec"] == 1
        assert fig["recover_s"] < 15  # lease 1.5 s + reaper 0.5 s + w2 starting up; never the 1 h visibility timeout
    finally:
        host_w1.heal()
        w1.stop(grace_s=5)
        if w2 is not None:
            w2.stop(grace_s=5)


def test_29_redis_refuses_a_host_without_the_password(host_w1: Host, net_redis: RedisServer) -> None:
    """From another host, Redis without the password answers NOAUTH; with it, PONG."""
    probe = "import redis,sys; r=redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), password=sys.argv[3] or None)\n"
    probe += "try:\n    print(r.ping())\nexcept redis.AuthenticationError as e:\n    print('NOAUTH', e)\n"

    def ask(password: str) -> str:
        cmd = [*host_w1.prefix, sys.executable, "-c", probe, host_w1.gateway, str(net_redis.port), password]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return out.stdout + out.stderr

    without = ask("")
    assert "NOAUTH" in without or "Authentication required" in without, without
    assert "True" in ask(net_redis.password)
    record({"scenario": "29 Redis without password from another host", "refused": "NOAUTH" in without
            or "Authentication required" in without})  # fmt: skip
