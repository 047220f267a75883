"""Fixture tasks for the map tests (tests/integration/test_map.py); workers import this module.

Each chunk call appends a line to ``config.log`` when given, so tests count executions by side
effect. ``fail_on`` elements fail permanently; ``fail_while`` fails while that file exists (retry
then succeeds); ``sleep_s`` keeps a chunk running (back-pressure, cancel, kill tests).
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from orchestrator import MapResults, PermanentError, TaskContext, task


class SpanConfig(BaseModel):
    n: int
    bump: int | None = None  #: this element gets +1000 (one changed chunk)


@task(name="tests.map.span")
def span(config: SpanConfig) -> list[int]:
    """The elements: 0 .. n-1."""
    return [i + (1000 if i == config.bump else 0) for i in range(config.n)]


class ChunkConfig(BaseModel):
    log: str | None = None
    sleep_s: float = 0.0
    fail_on: list[int] = []
    fail_while: str | None = None  #: a path with "{}" for the element: that element fails while the file exists
    factor: int = 1


def _note(config: ChunkConfig, text: str) -> None:
    if config.log:
        with open(config.log, "a") as f:
            f.write(text + "\n")


@task(name="tests.map.square", cache_ignore=("log", "sleep_s", "fail_while"))
def square(config: ChunkConfig, span: int, ctx: TaskContext) -> int:
    """One element: its square times ``factor``."""
    _note(config, f"square {span} {time.time():.6f}")
    if config.sleep_s:
        time.sleep(config.sleep_s)
    if span in config.fail_on:
        raise PermanentError(f"element {span} is bad")
    if config.fail_while and os.path.exists(config.fail_while.format(span)):
        raise PermanentError(f"{config.fail_while.format(span)} exists")
    ctx.progress(1, 1)
    return span * span * config.factor


@task(name="tests.map.plus_one")
def plus_one(config: ChunkConfig, square: int) -> int:
    """Map after map: one element of ``square``'s results."""
    _note(config, f"plus_one {square} {time.time():.6f}")
    if config.sleep_s:
        time.sleep(config.sleep_s)
    if config.fail_while and os.path.exists(config.fail_while.format(square)):
        raise PermanentError(f"{config.fail_while.format(square)} exists")
    return square + 1


class OffsetConfig(BaseModel):
    value: int


@task(name="tests.map.offset")
def offset(config: OffsetConfig) -> int:
    return config.value


@task(name="tests.map.add_offset", cache_ignore=("log",))
def add_offset(config: ChunkConfig, span: int, offset: int) -> int:
    """A map with a second parent: every chunk gets ``offset``'s result."""
    _note(config, f"add_offset {span}")
    return span + offset


@task(name="tests.map.total")
def total(square: MapResults[int]) -> dict:
    """The reduce: streamed, in input order; failed chunks listed."""
    values = list(square)
    return {"sum": sum(values), "n": len(values), "first": values[:3],
            "failed": [f.index for f in square.failed]}  # fmt: skip


@task(name="tests.map.total_after")
def total_after(plus_one: list[int]) -> dict:
    return {"sum": sum(plus_one), "n": len(plus_one)}


@task(name="tests.map.square_elsewhere", queue="map-nowhere")
def square_elsewhere(span: int) -> int:
    """Queued on a queue no test worker consumes: its messages stay on the broker to be measured."""
    return span * span


@task(name="tests.map.quick")
def quick() -> str:
    """A one-task run submitted while a big map runs."""
    return "ok"
