"""Run and task states (DESIGN "Concepts"): a closed set, as ``str`` enums.

The transitions themselves are enforced atomically inside the ledger script
(``orchestrator/lua/ledger.lua``); this module is what Python code compares to.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    PENDING = "pending"  #: created, nothing started yet
    RUNNING = "running"  #: at least one task started
    SUCCEEDED = "succeeded"  #: every task succeeded (or was cached)
    FAILED = "failed"  #: some task failed or upstream_failed
    CANCELLED = "cancelled"  #: cancel was requested


class TaskState(StrEnum):
    PENDING = "pending"  #: waiting for parents
    QUEUED = "queued"  #: message on the broker
    RUNNING = "running"  #: an attempt holds the lease
    RETRYING = "retrying"  #: an attempt failed; the next one is scheduled
    SUCCEEDED = "succeeded"
    CACHED = "cached"  #: reused an earlier result (skip-unchanged)
    FAILED = "failed"  #: raised after its last attempt
    UPSTREAM_FAILED = "upstream_failed"  #: a parent did not succeed (trigger rule all_success)
    CANCELLED = "cancelled"


TERMINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
TERMINAL_TASK_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.CACHED, TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED}
)
