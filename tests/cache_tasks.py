"""Fixture tasks for the cache tests (tests/integration/test_cache.py); workers import this module.

Every execution appends the node name to ``config.log`` (a param the cache ignores), so a test
counts executions by side effect, not by what the ledger says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator import TaskContext, task


class StepConfig(BaseModel):
    log: str  #: executions are appended here (ignored by the cache)
    value: int = 0
    data: str | None = None  #: an input file, hashed by content
    fail_if: str | None = None  #: fail while this file exists (ignored by the cache)


@task(name="tests.cache.step", cache_ignore=("log", "fail_if"), inputs=("data",))
def step(config: StepConfig, ctx: TaskContext, **upstream: Any) -> int:
    with open(config.log, "a") as f:
        f.write(ctx.node + "\n")
    if config.fail_if and os.path.exists(config.fail_if):
        raise RuntimeError(f"{config.fail_if} exists")
    extra = len(Path(config.data).read_text()) if config.data else 0
    (ctx.output_dir / "out.txt").write_text(str(config.value))
    return config.value + extra + sum(int(v or 0) for v in upstream.values())


@task(name="tests.cache.side_effect", cache=False)
def side_effect(config: StepConfig, ctx: TaskContext, **upstream: Any) -> int:
    with open(config.log, "a") as f:
        f.write(ctx.node + "\n")
    return config.value
