"""chordflow runs pipelines of Python task functions on Celery workers, with state in Redis.

Public API::

    from orchestrator import task, Pipeline, TaskContext, RetryPolicy, TimeoutPolicy, MapResults
"""

from __future__ import annotations

__version__ = "0.1.0"

from orchestrator.context import TaskContext
from orchestrator.map_results import FailedChunk, MapResults
from orchestrator.model import Pipeline
from orchestrator.spec import PermanentError, RetryPolicy, TimeoutPolicy, TransientError, TriggerRule, task

__all__ = [
    # Declaring tasks
    "task",
    "RetryPolicy",
    "TimeoutPolicy",
    "TriggerRule",
    "TransientError",
    "PermanentError",
    "TaskContext",
    # Pipelines
    "Pipeline",
    "MapResults",
    "FailedChunk",
    "__version__",
]
