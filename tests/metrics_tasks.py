"""Tasks that end by a time limit or lose their process: imported only by tests/integration/test_metrics.py's
own worker (queue ``metrics-q``)."""

from __future__ import annotations

import os
import signal
import time

import redis
from celery.exceptions import SoftTimeLimitExceeded

from orchestrator import TaskContext, TimeoutPolicy, task

QUEUE = "metrics-q"


@task(name="tests.metrics.soft", queue=QUEUE, timeout=TimeoutPolicy(soft_s=0.3, hard_s=10))
def soft() -> None:
    """Sleeps past its soft limit: SoftTimeLimitExceeded is raised inside it."""
    time.sleep(5)


@task(name="tests.metrics.hard", queue=QUEUE, timeout=TimeoutPolicy(soft_s=0.3, hard_s=0.8))
def hard() -> None:
    """Ignores its soft limit until the hard one kills its process."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            pass


@task(name="tests.metrics.die_once", queue=QUEUE)
def die_once(ctx: TaskContext) -> None:
    """Kills its own process on the first attempt (worker_lost); the requeued message then succeeds."""
    r = redis.Redis.from_url(os.environ["CHORDFLOW_REDIS_URL"], decode_responses=True)
    if r.hincrby(f"tests:die_once:{ctx.run_id}", ctx.node, 1) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
