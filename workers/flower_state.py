"""What Flower shows of a chordflow task: live progress, a short result summary, readable ids.

Flower builds its task list from Celery's task *events*, not from the result backend (and chordflow's
tasks store no Celery result: ``ignore_result``). So:

* **progress** is a custom event, ``task-progress``, sent with each progress write the task makes
  (``ctx.progress``, already throttled by ``progress_interval_s``). Celery's event state turns an
  unknown ``task-<name>`` event into the custom state ``<NAME>``: the task shows state ``PROGRESS``,
  and its ``result`` field holds ``{"done": d, "total": t}`` (the place Celery's own
  ``update_state(state="PROGRESS", meta=...)`` convention puts the meta) until it ends;
* a **finished** task's ``result`` is the runner's return value, which Celery puts in the
  ``task-succeeded`` event: a summary such as ``succeeded in 0.52 s: Pages (JSON object, 1.2 kB)``.
  Never the result itself (it may hold anything) and never params;
* a **chain hop** (a node published by its predecessor's Celery chain, not by the ledger) gets the
  same readable id as a ledger dispatch, ``<run_id>.<node>.<n>``: the ledger numbers it in the
  ``succeed`` step that releases it (same counter as its own dispatches) and the runner writes it into
  the chain's next signature before Celery publishes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.settings import Settings

_KINDS = {
    "{": "JSON object",
    "[": "JSON array",
    '"': "JSON string",
    "n": "null",
    "t": "JSON boolean",
    "f": "JSON boolean",
}


def progress_sender(celery_task: Any, settings: Settings) -> Callable[[int, int], None] | None:
    """A callback sending ``task-progress`` events for this attempt, or None when task events are off."""
    if not settings.task_events:
        return None

    def send(done: int, total: int) -> None:
        try:
            celery_task.send_event("task-progress", retry=False, result={"done": done, "total": total})
        except Exception:  # noqa: BLE001 - a monitoring event must never fail the task
            pass

    return send


def result_summary(duration_s: float, result_json: str, type_name: str | None = None, items: int | None = None,
                   outcome: str = "succeeded") -> str:  # fmt: skip
    """``succeeded in 0.52 s: Pages (JSON object, 1.2 kB)``: what ran, how long, what kind and size of result."""
    size = len(result_json) if result_json.isascii() else len(result_json.encode("utf-8"))
    kind = _KINDS.get(result_json[:1], "JSON number")
    what = f"{type_name} ({kind}, {_size(size)})" if type_name else f"{kind}, {_size(size)}"
    if items is not None:
        what = f"{items} items, {what}"
    return f"{outcome} in {duration_s:.2f} s: {what}"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


def name_chain_hop(celery_task: Any, task_id: str | None) -> None:
    """Give the next signature of this message's Celery chain the ledger's id for it."""
    chain = getattr(celery_task.request, "chain", None)
    if not task_id or not chain:
        return
    nxt = chain[-1]
    if isinstance(nxt, dict):
        nxt.setdefault("options", {})["task_id"] = task_id
