"""One error tree for chordflow: every error says *where* (file, task, field).

The CLI and the HTTP API catch :class:`ChordflowError` in one place and map it
to an exit code (see :mod:`orchestrator.exitcodes`) or a 4xx response.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One validation finding: where it is and what is wrong."""

    message: str
    task: str | None = None
    file: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.task:
            where.append(f"task '{self.task}'")
        if self.field:
            where.append(f"field '{self.field}'")
        return (": ".join(where) + ": " if where else "") + self.message


class ChordflowError(Exception):
    """Root of every error chordflow raises on purpose."""


class TaskDefinitionError(ChordflowError):
    """A function decorated with ``@task`` cannot be a chordflow task."""


class PipelineInvalid(ChordflowError):
    """The pipeline failed validation; ``problems`` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ParamOverrideError(ChordflowError):
    """A ``--param task.field=value`` override is malformed."""


class RedisUnavailable(ChordflowError):
    """Redis could not be reached (or refused the write); nothing was created."""


class RedisMisconfigured(RedisUnavailable):
    """Redis is set up to lose work (an eviction policy); chordflow refuses to use it."""


class RunStateLost(RedisUnavailable):
    """A run's keys vanished while it was active (Redis restarted without persistence)."""


class RunNotFound(ChordflowError):
    """No run with this id exists (or it has expired)."""


class RunNotFinished(ChordflowError):
    """The operation needs a finished run (retry)."""


class EmbeddedStartError(ChordflowError):
    """The private Redis server or local workers did not start."""


class Unroutable(ChordflowError):
    """No live worker consumes a task's queue or has the task registered (with ``refuse_unroutable``)."""
