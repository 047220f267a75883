"""No silent stall: work held by a dead worker comes back within about a lease, on any clock.

The broker's visibility timeout is an hour here (FAULT_ENV, as in production), so every bound below
can only be met by chordflow's own mechanisms: the ledger's due index for retries, the worker
registry's give-back of messages a dead worker had reserved, the lease reaper re-dispatching to the
*front* of the queue, and Redis ``TIME`` for every wait.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from tests.fault_tasks import block_bk, block_pf, flaky, noop_bk
from tests.faults.conftest import LEASE_S, REAPER_S, FaultWorkers, figures, probe_events, wait_for_event
from tests.integration.test_cli import chordflow

pytestmark = pytest.mark.usefixtures("worker")
SLACK_S = 4.0  #: scheduling on a busy 2-core machine


def _worker_of(fw: FaultWorkers, pid: int) -> str:
    """Which fault worker's pool ran the task with this pid."""
    parent = psutil.Process(pid).ppid()
    return next(name for name, w in fw.procs.items() if w.proc.pid == parent)


def _starts(r: redis.Redis, run_id: str, task: str) -> list[dict[str, str]]:
    return [e for e in probe_events(r, run_id) if e["task"] == task and e["phase"] == "start"]


def _wait(client: Client, run_id: str, timeout_s: float = 60):
    snap = client.wait(run_id, timeout_s=timeout_s, poll_s=0.05)
    assert snap.finished, f"stalled: {run_id} still {snap.state} {snap.states}"
    return snap


def test_30_worker_killed_during_retry_backoff(
    fault_workers: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """Attempt 1 fails (3 s backoff); its worker is SIGKILLed while the retry waits: attempt 2 runs on time."""
    fw = fault_workers
    fw.start("r1")
    fw.start("r2")
    run_id = client.submit(Pipeline("backoff-kill").add_task(flaky, params={"fail_times": 1}))
    fail = wait_for_event(redis_client, run_id, "flaky", "fail")
    deadline = time.monotonic() + 10
    while client.status(run_id).states["flaky"] != "retrying" and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = _worker_of(fw, int(fail["pid"]))
    fw.kill(victim)
    t_fault = client.store.now()
    snap = _wait(client, run_id)
    deferred_at = next(float(e["at"]) for e in client.store.attempt_log(run_id) if e["outcome"] == "retrying")
    second = _starts(redis_client, run_id, "flaky")[1]
    wait_s = float(second["at"]) - deferred_at
    fig = figures(client, redis_client, run_id, "30 worker killed during retry backoff", faulted={"flaky"},
                  policy_wait_s=3.0, measured_wait_s=round(wait_s, 3),
                  recover_s=round(float(second["at"]) - t_fault, 3))  # fmt: skip
    assert snap.state == "succeeded" and snap.attempts["flaky"] == "2"
    assert second["pid"] != fail["pid"] and _worker_of(fw, int(second["pid"])) != victim
    assert abs(wait_s - 3.0) <= 0.3, wait_s  # the policy's wait, within 10 %, though its worker died
    assert fig["lost"] == 0
    fw.stop_all()


def test_31_prefetched_messages_of_a_killed_worker_come_back(
    fault_workers: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """Prefetch 4, concurrency 1: the killed worker held 1 running + 3 reserved messages; all run again soon."""
    fw = fault_workers
    fw.start("p1", concurrency=1, queues=["faults-pf"], env={"CHORDFLOW_PREFETCH_MULTIPLIER": "4"})
    flag = f"tests:flag:{uuid.uuid4().hex}"
    p = Pipeline("prefetch")
    for i in range(5):
        p.add_task(block_pf, name=f"n{i}", params={"flag": flag})
    run_id = client.submit(p)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if redis_client.llen("faults-pf") == 1 and probe_events(redis_client, run_id):
            break
        time.sleep(0.02)
    assert redis_client.llen("faults-pf") == 1, "p1 should hold 4 messages (1 running, 3 reserved)"
    held = {n for n, s in client.status(run_id).states.items() if s in ("queued", "running")}
    fw.kill("p1")
    t_fault = client.store.now()
    fw.start("p2", concurrency=2, queues=["faults-pf"])
    t_ready = client.store.now()
    redis_client.set(flag, 1)
    snap = _wait(client, run_id)
    after = {n: min(float(e["at"]) for e in _starts(redis_client, run_id, n) if float(e["at"]) > t_fault)
             for n in snap.states}  # fmt: skip
    recover_s = max(after.values()) - t_fault
    bound = (t_ready - t_fault) + LEASE_S + REAPER_S + SLACK_S
    fig = figures(client, redis_client, run_id, "31 worker with prefetch 4 killed", faulted=held,
                  held_by_killed_worker=len(held) - 1, worker_restart_s=round(t_ready - t_fault, 3),
                  recover_s=round(recover_s, 3))  # fmt: skip
    fw.stop_all()
    assert snap.state == "succeeded", snap.states
    assert fig["lost"] == 0 and fig["double_trigger"] == 0
    assert recover_s < bound, (recover_s, bound)


def test_32_reaped_task_goes_to_the_front_of_a_10000_message_backlog(
    fault_workers: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    """A task whose worker died is re-dispatched ahead of 10,000 queued messages, not behind them."""
    fw = fault_workers
    fw.start("b1", concurrency=1, queues=["faults-bk"])
    flag = f"tests:flag:{uuid.uuid4().hex}"
    run_id = client.submit(Pipeline("backlog-victim").add_task(block_bk, name="victim", params={"flag": flag}))
    wait_for_event(redis_client, run_id, "victim", "start")
    flood = Pipeline("flood")
    for i in range(10_000):
        flood.add_task(noop_bk, name=f"f{i:05d}")
    flood_id = client.submit(flood)
    fw.kill("b1")
    t_fault = client.store.now()
    fw.start("b2", concurrency=1, queues=["faults-bk"])
    t_ready = client.store.now()
    redis_client.set(flag, 1)
    deadline = time.monotonic() + 60
    while len(_starts(redis_client, run_id, "victim")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    backlog_left = redis_client.llen("faults-bk")
    client.cancel(flood_id)
    redis_client.delete("faults-bk")  # the cancelled flood's messages: nobody needs to drain them
    snap = _wait(client, run_id)
    starts = _starts(redis_client, run_id, "victim")
    assert len(starts) == 2, "the victim never ran again"
    recover_s = float(starts[1]["at"]) - t_fault
    bound = (t_ready - t_fault) + LEASE_S + REAPER_S + SLACK_S
    fig = figures(client, redis_client, run_id, "32 reaped task behind 10,000 queued messages", faulted={"victim"},
                  backlog_left_when_rerun=backlog_left, recover_s=round(recover_s, 3))  # fmt: skip
    fw.stop_all()
    assert snap.state == "succeeded"
    assert backlog_left > 5_000, "the backlog was mostly still queued: the victim jumped it"
    assert recover_s < bound, (recover_s, bound)
    assert fig["lost"] == 0


@pytest.fixture(scope="module")
def clock_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LD_PRELOAD wall-clock shim, compiled for this machine."""
    out = tmp_path_factory.mktemp("shim") / "clockshift.so"
    src = Path(__file__).with_name("clockshift.c")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"], check=True, timeout=60)
    probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], capture_output=True,
                           text=True, env={"LD_PRELOAD": str(out), "CLOCK_SHIFT_S": "600"}, check=True)  # fmt: skip
    assert float(probe.stdout) - time.time() > 590, "the shim does not shift the wall clock"
    return out


def _start_shifted(fw: FaultWorkers, shim: Path, name: str) -> None:
    shift = {"ahead": "600", "behind": "-600"}[name]
    fw.start(name, concurrency=1, queues=["faults-clk"], env={"LD_PRELOAD": str(shim), "CLOCK_SHIFT_S": shift})


def test_33_shifted_wall_clocks_keep_retry_waits_and_durations_right(
    fault_workers: FaultWorkers, clock_shim: Path, client: Client, redis_client: redis.Redis,
    cli_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    """Each retry is deferred by a worker 10 min ahead and run by one 10 min behind, or the reverse (the
    workers are swapped during each backoff); the CLI that submits is ahead, the one that reads is behind.
    Waits stay within 10 % of the policy (4 s, 8 s) and no duration or span is negative."""
    fw = fault_workers
    _start_shifted(fw, clock_shim, "ahead")
    pipeline = tmp_path / "clk.toml"
    pipeline.write_text('[pipeline]\nname = "clock"\n[tasks.flaky]\nuses = "tests.fault_tasks.flaky_clk"\n'
                        'params = { fail_times = 2 }\n')  # fmt: skip
    ahead = {**cli_env, "LD_PRELOAD": str(clock_shim), "CLOCK_SHIFT_S": "600", "COLUMNS": "250"}
    behind = {**cli_env, "LD_PRELOAD": str(clock_shim), "CLOCK_SHIFT_S": "-600"}
    out = chordflow("run", str(pipeline), "--detach", env=ahead)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().splitlines()[-1]
    mid = None
    for attempt, (old, new) in enumerate((("ahead", "behind"), ("behind", "ahead")), start=1):
        deadline = time.monotonic() + 30
        while client.status(run_id).attempts.get("flaky") != str(attempt) or (
                client.status(run_id).states["flaky"] != "retrying"):  # fmt: skip
            assert time.monotonic() < deadline, client.status(run_id).states
            time.sleep(0.02)
        if mid is None:
            mid = chordflow("status", run_id, "--json", env=behind)  # durations while it runs
        fw.procs.pop(old).stop(grace_s=5)  # the deferring worker leaves; the other clock runs the retry
        _start_shifted(fw, clock_shim, new)
    snap = _wait(client, run_id)
    deferred = [float(e["at"]) for e in client.store.attempt_log(run_id) if e["outcome"] == "retrying"]
    starts = sorted(float(e["at"]) for e in _starts(redis_client, run_id, "flaky"))
    waits = [round(s - d, 3) for d, s in zip(deferred, starts[1:], strict=True)]
    final = chordflow("status", run_id, "--json", env=behind)
    runs = chordflow("runs", "--limit", "50", env=ahead)
    durations = [t["duration_s"] for o in (mid, final) for t in json.loads(o.stdout)["tasks"].values()
                 if t["duration_s"] is not None]  # fmt: skip
    row = next(line for line in runs.stdout.splitlines() if run_id in line)
    span = [c.strip() for c in row.split("│") if c.strip()][-1]
    hosts = [e["host"].split("@")[0] for e in client.store.attempt_log(run_id)]
    fig = figures(client, redis_client, run_id, "33 wall clocks shifted ±10 min", faulted={"flaky"},
                  policy_waits_s=[4.0, 8.0], measured_waits_s=waits, min_duration_s=round(min(durations), 3),
                  runs_span=span, attempt_hosts=hosts)  # fmt: skip
    fw.stop_all()
    assert snap.state == "succeeded" and snap.attempts["flaky"] == "3"
    assert hosts == ["ahead", "behind", "ahead"], hosts
    assert abs(waits[0] - 4.0) <= 0.4 and abs(waits[1] - 8.0) <= 0.8, waits
    assert mid.returncode == 0 and final.returncode == 0
    assert min(durations) >= 0, durations
    assert not span.startswith("-") and float(span.rstrip("s")) < 60, span
    assert float(snap.meta["created_at"]) <= float(snap.meta["finished_at"])
    assert fig["lost"] == 0
