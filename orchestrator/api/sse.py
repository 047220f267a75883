"""A run's events as server-sent events: snapshot first, then every change, ending with the run's end.

Wire format (one SSE event per ledger event; ``id`` is the Redis stream id)::

    id: 1732440000123-0
    event: task | progress | run
    data: {"run_id": ..., "kind": "task", "node": "clean", "state": "running", "at": "..."}

* A new client (no ``Last-Event-ID`` header, no ``?after=``) first gets ``event: snapshot``
  (the whole :class:`~orchestrator.api.models.RunStatus`, ``id`` = the last event it includes),
  so a late client is complete; if the run is already over, a ``run`` event with its final
  state follows and the stream ends.
* A resuming client gets exactly the events after its id, none twice. If the stream was
  trimmed past that id (``EVENTS_MAXLEN``), it gets a fresh snapshot instead of a gap.
* A quiet stream carries a ``: keepalive`` comment every ``sse_heartbeat_s`` so proxies keep it.
* The stream ends after the terminal ``run`` event; a client resuming after it gets
  ``event: end`` (no id) and the stream ends: the browser should ``close()`` its EventSource then.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import redis

from orchestrator import keys
from orchestrator.aio import AsyncClient, is_terminal
from orchestrator.api.models import run_status
from orchestrator.errors import ChordflowError, RunNotFound
from orchestrator.states import TERMINAL_RUN_STATES
from orchestrator.store import RunSnapshot

STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$", re.ASCII)
RETRY_MS = 1000  #: how soon a browser reconnects after a cut


def parse_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq)


def frame(event: str, data: str, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def trimmed_past(aclient: AsyncClient, run_id: str, after: str) -> bool:
    """Whether events after ``after`` may have been trimmed from the stream (the client would miss some).

    Conservative: true when entries were removed and ``after`` is older than the oldest one kept
    (a needless snapshot is harmless; a silent gap is not).
    """
    try:
        info = await aclient.r.xinfo_stream(keys.run_keys(run_id).events)
    except redis.ResponseError:  # no stream yet
        return False
    if int(info.get("entries-added", 0)) <= int(info.get("length", 0)):
        return False
    first = info.get("first-entry")
    oldest = str(first[0]) if first else str(info.get("last-generated-id", "0-0"))
    return STREAM_ID.match(oldest) is not None and parse_id(after) < parse_id(oldest)


async def run_events(
    aclient: AsyncClient, run_id: str, after: str | None, snapshot: RunSnapshot | None, heartbeat_s: float
) -> AsyncIterator[str]:
    """The SSE text of run ``run_id``: see the module docstring. ``snapshot`` is sent first when given."""
    yield f"retry: {RETRY_MS}\n\n"
    if snapshot is None and after is not None and await trimmed_past(aclient, run_id, after):
        snapshot = await aclient.status(run_id)
    if snapshot is not None:
        yield frame("snapshot", run_status(snapshot).model_dump_json(), snapshot.last_event)
        after = snapshot.last_event
        if snapshot.finished:
            final = {"run_id": run_id, "kind": "run", "state": snapshot.state, "at": snapshot.meta.get("finished_at")}
            yield frame("run", json.dumps(final), snapshot.last_event)
            return
    cursor = after or "0-0"
    block_ms = max(1, int(heartbeat_s * 1000))
    while True:
        try:
            batch = await aclient.read_events(run_id, cursor, block_ms=block_ms)
            if not batch:
                state = await aclient.run_state(run_id)
                if state in TERMINAL_RUN_STATES:
                    yield frame("end", json.dumps({"run_id": run_id, "state": state}))
                    return
                yield ": keepalive\n\n"
                continue
        except RunNotFound:
            yield frame("error", json.dumps({"run_id": run_id, "detail": "the run's keys expired or were deleted"}))
            return
        except ChordflowError:
            yield frame("error", json.dumps({"run_id": run_id, "detail": "Redis is unavailable; reconnect later"}))
            return
        for eid, fields in batch:
            yield frame(fields.get("kind", "task"), json.dumps({"run_id": run_id, **fields}), eid)
            if is_terminal(fields):
                return
        cursor = batch[-1][0]
