"""Probe tasks for the fault suite: each execution is appended to a Redis stream (the probe ledger).

Tests count from that ledger: starts per node (extra executions, double
triggers), and find the pid to kill. ``block`` waits on a flag key, so a kill
lands mid-task deterministically, without sleeps. All run on queue ``faults``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from billiard.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel

from orchestrator import MapResults, RetryPolicy, TaskContext, TimeoutPolicy, task

QUEUE = "faults"


def probe_stream(run_id: str) -> str:
    return f"tests:probe:{run_id}"


def _r() -> redis.Redis:
    return redis.Redis.from_url(os.environ["CHORDFLOW_REDIS_URL"], decode_responses=True)


def _record(ctx: TaskContext, phase: str) -> None:
    """One probe event, stamped with Redis TIME (a worker's own clock may be shifted on purpose)."""
    r = _r()
    sec, usec = r.time()
    r.xadd(
        probe_stream(ctx.run_id),
        {"task": ctx.node, "attempt": ctx.attempt, "pid": os.getpid(), "phase": phase, "at": sec + usec / 1e6},
    )


class BlockConfig(BaseModel):
    flag: str = ""  #: Redis key to wait for ("" = no wait)
    seconds: float = 0.0  #: plain work time
    timeout_s: float = 7.0


@task(name="faults.block", queue=QUEUE, timeout=TimeoutPolicy(soft_s=8, hard_s=9))
def block(config: BlockConfig, ctx: TaskContext, **upstream: Any) -> dict[str, Any]:
    """Starts, waits for ``flag`` (if any) and ``seconds``, ends."""
    return _block(config, ctx)


@task(name="faults.block_pf", queue="faults-pf", timeout=TimeoutPolicy(soft_s=20, hard_s=21))
def block_pf(config: BlockConfig, ctx: TaskContext) -> dict[str, Any]:
    """``block`` on queue ``faults-pf`` (the prefetch scenario's own workers)."""
    return _block(config, ctx)


@task(name="faults.block_bk", queue="faults-bk", timeout=TimeoutPolicy(soft_s=20, hard_s=21))
def block_bk(config: BlockConfig, ctx: TaskContext) -> dict[str, Any]:
    """``block`` on queue ``faults-bk`` (the backlog scenario's own workers)."""
    return _block(config, ctx)


@task(name="faults.noop_bk", queue="faults-bk")
def noop_bk() -> None:
    """Backlog filler on queue ``faults-bk``."""


class FlakyConfig(BaseModel):
    fail_times: int = 1  #: attempts that raise before one succeeds
    flag: str = ""  #: the failing attempts wait for this key first (so a kill can be aimed)


def _flaky(config: FlakyConfig, ctx: TaskContext) -> dict[str, Any]:
    _record(ctx, "start")
    r = _r()
    while config.flag and not r.exists(config.flag):
        time.sleep(0.02)
    if ctx.attempt <= config.fail_times:
        _record(ctx, "fail")
        raise ConnectionError(f"attempt {ctx.attempt} fails on purpose")
    _record(ctx, "end")
    return {"attempt": ctx.attempt}


@task(name="faults.flaky", queue=QUEUE, retry=RetryPolicy(attempts=3, backoff_s=3, backoff_max_s=30, jitter_s=0))
def flaky(config: FlakyConfig, ctx: TaskContext) -> dict[str, Any]:
    """Fails its first ``fail_times`` attempts; waits 3 s, then 6 s, between attempts (no jitter)."""
    return _flaky(config, ctx)


@task(name="faults.flaky_clk", queue="faults-clk",
      retry=RetryPolicy(attempts=3, backoff_s=4, backoff_max_s=30, jitter_s=0))  # fmt: skip
def flaky_clk(config: FlakyConfig, ctx: TaskContext) -> dict[str, Any]:
    """``flaky`` on queue ``faults-clk`` with 4 s then 8 s waits (the shifted-clock workers)."""
    return _flaky(config, ctx)


def _block(config: BlockConfig, ctx: TaskContext) -> dict[str, Any]:
    _record(ctx, "start")
    r = _r()
    deadline = time.monotonic() + config.timeout_s
    while config.flag and time.monotonic() < deadline:
        try:
            if r.exists(config.flag):
                break
        except redis.ConnectionError:  # the probe rides out a Redis restart; chordflow must too
            pass
        time.sleep(0.02)
    time.sleep(config.seconds)
    _record(ctx, "end")
    return {"pid": os.getpid()}


@task(name="faults.long", queue=QUEUE, timeout=TimeoutPolicy(soft_s=20, hard_s=21))
def long(config: BlockConfig, ctx: TaskContext) -> dict[str, Any]:
    """A healthy task that runs longer than the broker's visibility timeout."""
    _record(ctx, "start")
    time.sleep(config.seconds)
    _record(ctx, "end")
    return {"slept": config.seconds}


@task(name="faults.poison", queue=QUEUE, timeout=TimeoutPolicy(soft_s=5, hard_s=6))
def poison(ctx: TaskContext) -> None:
    """Kills its own process on every attempt."""
    _record(ctx, "start")
    os.kill(os.getpid(), 9)


@task(name="faults.hang", queue=QUEUE, timeout=TimeoutPolicy(soft_s=1, hard_s=2))
def hang(ctx: TaskContext) -> None:
    """Ignores the soft limit; only the hard limit stops it."""
    _record(ctx, "start")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            _record(ctx, "soft_limit")


@task(name="faults.bad_result", queue=QUEUE, retry=RetryPolicy(attempts=3, backoff_s=0.1, jitter_s=0))
def bad_result(ctx: TaskContext) -> Any:
    """Returns something that is not JSON."""
    _record(ctx, "start")
    return {1, 2, 3}


class SecretConfig(BaseModel):
    api_token: str
    dsn: str


@task(name="faults.leaky", queue=QUEUE, secret_fields=("dsn",))
def leaky(config: SecretConfig, ctx: TaskContext) -> None:
    """Fails with its secrets in the exception message."""
    _record(ctx, "start")
    raise RuntimeError(f"could not connect with token={config.api_token} to {config.dsn}")


@task(name="faults.leak", queue=QUEUE)
def leak(ctx: TaskContext) -> None:
    """Grows memory under an address-space limit until MemoryError (the limit is lifted afterwards)."""
    import resource

    _record(ctx, "start")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as fh:
        vm_bytes = int(fh.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes + 200 * 1024 * 1024, hard))
    try:
        hog = []
        while True:
            hog.append(bytearray(10 * 1024 * 1024))
    finally:
        hog = []
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# -- map nodes (tests/faults/test_map_faults.py): queue "faults-map" ----------------------------------


class ElementsConfig(BaseModel):
    n: int


@task(name="faults.elements", queue="faults-map")
def elements(config: ElementsConfig) -> list[int]:
    return list(range(config.n))


@task(name="faults.map_chunk", queue="faults-map", timeout=TimeoutPolicy(soft_s=8, hard_s=9))
def map_chunk(config: BlockConfig, elements: int, ctx: TaskContext) -> int:
    """One element: probed at start and end, ``seconds`` of work in between."""
    _record(ctx, "start")
    time.sleep(config.seconds)
    _record(ctx, "end")
    return elements * 2


@task(name="faults.reduce_once", queue="faults-map")
def reduce_once(map_chunk: MapResults[int], ctx: TaskContext) -> int:
    """The reduce: probed, so a test counts how often it ran."""
    _record(ctx, "start")
    return sum(map_chunk)
