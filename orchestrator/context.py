"""What a task function may ask of its run: the ``ctx`` parameter.

Only the interface lives here, so task code and the pipeline model import no
Celery and no Redis; ``workers/context.py`` provides the implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class TaskContext(Protocol):
    """Passed to a task function that declares a ``ctx`` parameter."""

    run_id: str
    node: str  #: the node's name in the pipeline
    attempt: int  #: 1 for the first attempt
    log: Any  #: a structlog logger bound to run_id, task, attempt and host

    @property
    def output_dir(self) -> Path:
        """This task's artifact directory for this run (created on first use)."""
        ...

    def progress(self, done: int, total: int) -> None:
        """Report progress; writes are throttled, the last one always lands."""
        ...
