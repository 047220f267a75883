"""Tasks no test worker imports (they are not in any worker's task modules): unroutable on purpose."""

from __future__ import annotations

from orchestrator import task


@task(name="tests.unregistered.lonely")
def lonely() -> dict[str, int]:
    """On the default queue, where the session worker does not know it."""
    return {"ran": 1}


@task(name="tests.unregistered.nowhere", queue="nobody")
def nowhere() -> dict[str, int]:
    """On a queue no worker consumes."""
    return {"ran": 1}
