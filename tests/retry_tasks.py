"""Probe tasks for the retry-policy and cancel tests (the session worker imports this module).

Each records what it did in Redis with Redis ``TIME`` (one clock for every process), so the tests
are black-box: they hold whether retries are Celery countdowns or scheduled by the ledger.
"""

from __future__ import annotations

import os
import time
from typing import Literal

import redis
from pydantic import BaseModel

from orchestrator import PermanentError, RetryPolicy, TaskContext, TransientError, task

#: Backoff under test: waits 0.5, 1.0 (doubled), then 1.2 (2.0 capped); no jitter.
BACKOFF = RetryPolicy(attempts=4, backoff_s=0.5, backoff_max_s=1.2, jitter_s=0)
ERRORS: dict[str, type[Exception]] = {
    "connection": ConnectionError,
    "value": ValueError,
    "transient": TransientError,
    "permanent": PermanentError,
}


def _probe() -> redis.Redis:
    return redis.Redis.from_url(os.environ["CHORDFLOW_REDIS_URL"], decode_responses=True)


def probe_key(run_id: str, node: str, what: str) -> str:
    return f"tests:probe:{run_id}:{node}:{what}"


def redis_now(r: redis.Redis) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


class RaiseConfig(BaseModel):
    kind: Literal["connection", "value", "transient", "permanent"]


@task(
    name="tests.retry_on_connection",
    retry=RetryPolicy(attempts=3, backoff_s=0.05, backoff_max_s=0.1, jitter_s=0, retry_on=(ConnectionError,)),
)
def retry_on_connection(config: RaiseConfig, ctx: TaskContext) -> None:
    """Retries only ConnectionError (and TransientError); raises ``config.kind`` on every attempt."""
    _probe().rpush(probe_key(ctx.run_id, ctx.node, "attempts"), ctx.attempt)
    raise ERRORS[config.kind](f"{config.kind} on attempt {ctx.attempt}")


@task(name="tests.retry_on_anything", retry=RetryPolicy(attempts=3, backoff_s=0.05, backoff_max_s=0.1, jitter_s=0))
def retry_on_anything(config: RaiseConfig, ctx: TaskContext) -> None:
    """Default ``retry_on`` (every Exception): only PermanentError should stop it early."""
    _probe().rpush(probe_key(ctx.run_id, ctx.node, "attempts"), ctx.attempt)
    raise ERRORS[config.kind](f"{config.kind} on attempt {ctx.attempt}")


@task(name="tests.backoff_probe", retry=BACKOFF)
def backoff_probe(ctx: TaskContext) -> None:
    """Fails every attempt, recording its start and end by Redis time."""
    r = _probe()
    r.rpush(probe_key(ctx.run_id, ctx.node, "start"), redis_now(r))
    r.rpush(probe_key(ctx.run_id, ctx.node, "end"), redis_now(r))
    raise ConnectionError(f"attempt {ctx.attempt}")


@task(name="tests.block_until_killed", timeout=120)
def block_until_killed(ctx: TaskContext) -> None:
    """Records its pid, then blocks for a minute unless its process is terminated."""
    r = _probe()
    r.set(probe_key(ctx.run_id, ctx.node, "pid"), os.getpid())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    r.set(probe_key(ctx.run_id, ctx.node, "finished"), 1)
