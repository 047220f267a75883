"""What a worker does with a chordflow message for a task it has not registered.

Typical causes: the task's module is not under the worker's ``task_modules``,
its package has no ``__init__.py`` (so the worker's import walk skips it), or
the worker was started before the task was written. The node fails at once
with those hints, instead of the message being dropped and the run waiting.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from orchestrator.fleet import Fleet
from orchestrator.settings import Settings
from orchestrator.store import RUN_ID_RE
from workers.logs import get_logger


def _ids(message: Any) -> tuple[str, str] | None:
    """(run_id, node) if the message body is a chordflow call ``task(run_id, node)``."""
    try:
        body = message.payload
        args = body[0] if isinstance(body, list | tuple) else body.get("args")
        run_id, node = args
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        return None
    if isinstance(run_id, str) and isinstance(node, str) and RUN_ID_RE.fullmatch(run_id):
        return run_id, node
    return None


def fail_unknown_node(settings: Settings, worker: str, message: Any, task_name: str) -> None:
    ids = _ids(message)
    if ids is None:
        return
    run_id, node = ids
    from workers.runner import store_for  # this process's RunStore (one per process, as for tasks)

    store = store_for(settings)
    text = (
        f"worker '{worker}' has no task '{task_name}' registered (its task modules: "
        f"{', '.join(settings.task_modules)}). Put the task's module under a task module, in a package with "
        "__init__.py (the worker imports packages only), and restart the workers after changing task code."
    )
    error = {"type": "TaskNotRegistered", "reason": "unregistered", "message": text, "traceback": []}
    line = json.dumps({"task": node, "attempt": 0, "outcome": "failed", "host": worker,
                       "error": error["type"], "message": text[:300]})  # fmt: skip
    log = get_logger(run_id=run_id, task=node, host=worker)
    headers = getattr(message, "headers", None) or {}
    queue = (getattr(message, "delivery_info", None) or {}).get("routing_key", "")
    try:
        live = Fleet(store.r).live()
        others = [w for w in live if task_name in w.tasks and queue in w.queues and w.name != worker]
        outcome = store.reject(run_id, node, json.dumps(error), line, str(headers.get("id") or ""), bool(others))
    except redis.RedisError as exc:
        log.error("task.unregistered_unrecorded", error=str(exc))
        return
    log.error("task.unregistered", task_name=task_name, outcome=outcome)  # requeued: another worker knows it
