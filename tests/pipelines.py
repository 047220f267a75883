"""Importable fixture tasks for the test suite (workers import this module).

Each task writes what it did into Redis through its result or the ledger only;
the probes that count executions use a per-run Redis counter the test reads.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from pydantic import BaseModel, SecretStr

from orchestrator import Pipeline, RetryPolicy, TaskContext, TriggerRule, task


class SleepConfig(BaseModel):
    seconds: float = 0.0
    fail: bool = False
    tag: str = ""


class Stamp(BaseModel):
    """When a node ran (worker clock), for ordering assertions."""

    node: str
    started: float
    finished: float
    pid: int


class Count(BaseModel):
    value: int


def _probe() -> redis.Redis:
    return redis.Redis.from_url(os.environ["CHORDFLOW_REDIS_URL"], decode_responses=True)


@task(name="tests.noop")
def noop() -> None:
    """Does nothing: for throughput and size tests."""


@task(name="tests.stamp")
def stamp(config: SleepConfig, ctx: TaskContext, **upstream: Any) -> Stamp:
    """Sleeps ``seconds`` then records when it ran; counts executions in Redis."""
    started = time.time()
    _probe().hincrby(f"tests:executions:{ctx.run_id}", ctx.node, 1)
    steps = 5
    for i in range(steps):
        time.sleep(config.seconds / steps)
        ctx.progress(i + 1, steps)
    if config.fail:
        raise RuntimeError(f"{ctx.node} failed on purpose")
    return Stamp(node=ctx.node, started=started, finished=time.time(), pid=os.getpid())


class FlakyConfig(BaseModel):
    failures: int = 2


@task(name="tests.flaky", retry=RetryPolicy(attempts=4, backoff_s=0.05, backoff_max_s=0.2, jitter_s=0.05))
def flaky(config: FlakyConfig, ctx: TaskContext) -> Count:
    """Fails ``failures`` times (counted in Redis), then succeeds."""
    n = _probe().hincrby(f"tests:flaky:{ctx.run_id}", ctx.node, 1)
    if n <= config.failures:
        raise ConnectionError(f"transient failure {n}")
    return Count(value=n)


@task(name="tests.report", trigger_rule=TriggerRule.ALWAYS)
def always_report(ctx: TaskContext, **upstream: Any) -> dict[str, Any]:
    """Runs whatever happened upstream; lists which parents produced a result."""
    _probe().hincrby(f"tests:executions:{ctx.run_id}", ctx.node, 1)
    return {"seen": sorted(k for k, v in upstream.items() if v is not None)}


class NumberConfig(BaseModel):
    value: int = 1


@task(name="tests.number")
def number(config: NumberConfig) -> Count:
    return Count(value=config.value)


@task(name="tests.add")
def add(**upstream: Any) -> Count:
    """Sums the ``value`` of every parent: checks that inputs arrive by name."""
    return Count(value=sum(v["value"] for v in upstream.values()))


@task(name="tests.double")
def double(number: Count) -> Count:
    return Count(value=number.value * 2)


def layered(width: int, depth: int) -> Pipeline:
    """``depth`` layers of ``width`` no-ops; node j of layer k depends on 2-3 nodes of layer k-1."""
    p = Pipeline(f"layered-{width}x{depth}")
    for k in range(depth):
        for j in range(width):
            deps = (
                []
                if k == 0
                else sorted({f"n{k - 1}_{j}", f"n{k - 1}_{(j + 1) % width}", f"n{k - 1}_{(j + 7) % width}"})
            )
            p.add_task(noop, name=f"n{k}_{j}", depends_on=deps)
    return p


class GateConfig(BaseModel):
    flag: str


@task(name="tests.gate")
def gate(config: GateConfig, ctx: TaskContext, **upstream: Any) -> Count:
    """Fails until the Redis key ``flag`` exists (a fault the operator fixes before ``retry``)."""
    r = _probe()
    n = r.hincrby(f"tests:executions:{ctx.run_id}", ctx.node, 1)
    if not r.exists(config.flag):
        raise RuntimeError(f"{config.flag} is not set")
    return Count(value=n)


class EchoConfig(BaseModel):
    text: str


@task(name="tests.echo")
def echo(config: EchoConfig) -> dict[str, str]:
    """Returns its param unchanged: strings are data, never code."""
    return {"text": config.text}


class DbSettings(BaseModel):
    host: str = "localhost"
    port: int = 5432


class DbConnConfig(BaseModel):
    """Nested models at every shape the strict params check walks (no ``extra='forbid'`` anywhere)."""

    db: DbSettings = DbSettings()
    replicas: list[DbSettings] = []
    by_region: dict[str, DbSettings] = {}
    fallback: DbSettings | None = None
    label: str = ""


@task(name="tests.dbconn")
def dbconn(config: DbConnConfig) -> dict[str, Any]:
    """Returns the params it ran with, so a test sees what a nested override reached."""
    return config.model_dump()


class ChattyConfig(BaseModel):
    lines: int = 3
    seconds: float = 0.0
    api_key: SecretStr = SecretStr("")


@task(name="tests.chatty")
def chatty(config: ChattyConfig, ctx: TaskContext, **upstream: Any) -> Count:
    """Logs ``lines`` lines through ``ctx.log`` (each quoting its secret param, which must come out masked)."""
    for i in range(config.lines):
        ctx.log.info("chatty.line", line=i, note=f"calling the API with {config.api_key.get_secret_value()}")
        time.sleep(config.seconds / max(1, config.lines))
    return Count(value=config.lines)
