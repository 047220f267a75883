"""A worker SIGKILLed in the middle of a map: its chunks come back within about a lease, every other
chunk runs once, and the reduce runs exactly once with every result."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from tests.fault_tasks import elements, map_chunk, reduce_once
from tests.faults.conftest import LEASE_S, REAPER_S, FaultWorkers, figures, probe_events

pytestmark = pytest.mark.usefixtures("worker")
SLACK_S = 4.0


def test_35_worker_killed_mid_map_reduce_runs_exactly_once(
    fault_workers: FaultWorkers, client: Client, redis_client: redis.Redis
) -> None:
    fw = fault_workers
    fw.start("m1", concurrency=2, queues=["faults-map"])
    fw.start("m2", concurrency=2, queues=["faults-map"])
    n = 300
    p = (
        Pipeline("map-kill")
        .add_task(elements, params={"n": n})
        .add_map(map_chunk, over="elements", params={"seconds": 0.03}, max_in_flight=8)
        .add_task(reduce_once, depends_on=["map_chunk"])
    )
    run_id = client.submit(p)
    deadline = time.monotonic() + 60
    m1 = fw.procs["m1"].proc.pid
    killed: set[str] = set()
    while not killed:  # a third of the map done, and m1 in the middle of some chunks
        assert time.monotonic() < deadline
        time.sleep(0.02)
        if client.status(run_id).maps.get("map_chunk", {}).get("succeeded", 0) < n // 3:
            continue
        starts = probe_events(redis_client, run_id)
        ended = {e["task"] for e in starts if e["phase"] == "end"}
        killed = {e["task"] for e in starts if e["phase"] == "start" and e["task"] not in ended
                  and _parent(int(e["pid"])) == m1}  # fmt: skip
    fw.kill("m1")
    t_fault = client.store.now()
    snap = client.wait(run_id, timeout_s=60, poll_s=0.05)
    events = probe_events(redis_client, run_id)
    again = [float(e["at"]) for e in events if e["phase"] == "start" and e["task"] in killed
             and float(e["at"]) > t_fault]  # fmt: skip
    recover_s = max(again) - t_fault if again else 0.0
    chunk_starts = Counter(e["task"] for e in events if e["phase"] == "start" and e["task"].startswith("map_chunk["))
    reduce_runs = sum(1 for e in events if e["task"] == "reduce_once" and e["phase"] == "start")
    fig = figures(client, redis_client, run_id, "35 worker killed mid-map (300 chunks)", faulted=killed,
                  chunks=n, chunks_killed=len(killed), recover_s=round(recover_s, 3),
                  reduce_runs=reduce_runs)  # fmt: skip
    fw.stop_all()
    assert snap.state == "succeeded", (snap.states, snap.errors)
    assert client.results(run_id)["reduce_once"] == sum(2 * i for i in range(n))
    assert fig["reduce_runs"] == 1 and fig["chunks_killed"] >= 1
    assert set(chunk_starts) == {f"map_chunk[{i}]" for i in range(n)}
    assert all(c == 1 for t, c in chunk_starts.items() if t not in killed), "a chunk not on the killed worker ran twice"
    assert recover_s < LEASE_S + REAPER_S + SLACK_S, recover_s


def _parent(pid: int) -> int | None:
    import psutil

    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None
