"""A task's log lines kept in Redis, so the dashboard shows them per (run, task) without log shipping.

A structlog processor (:func:`keep_task_line`, after the secret masking) hands every event that
carries ``run_id`` and ``task`` to this process's :class:`LogSink`, which buffers it; a daemon
thread writes the buffer every ``FLUSH_S`` in one pipeline (``LPUSH`` + ``LTRIM`` to
:data:`~orchestrator.keys.TASK_LOG_LINES` + ``EXPIRE`` to the run's TTL per list). The attempt never
waits for Redis on a log call. Best effort by design: if Redis is away the buffer is bounded and the
oldest lines are dropped; the JSON lines on stderr / the log file stay the complete record.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from typing import Any

import redis

from orchestrator import keys

FLUSH_S = 0.2
MAX_BUFFER = 10_000  #: lines held while Redis is away (the oldest go first)
MAX_LINE = 4_000  #: characters kept of one line

_lock = threading.Lock()
_sinks: dict[int, LogSink] = {}
_config: dict[str, Any] = {}


class LogSink:
    """Buffered writer of task log lines; one per process (made after fork)."""

    def __init__(self, url: str, ttl_s: int) -> None:
        from orchestrator.store import connect

        self.r = connect(url)
        self.ttl_s = ttl_s
        self._buffer: deque[tuple[str, str, str]] = deque(maxlen=MAX_BUFFER)
        self._wake = threading.Event()
        threading.Thread(target=self._loop, name="chordflow-log-sink", daemon=True).start()

    def add(self, run_id: str, task: str, line: str) -> None:
        self._buffer.append((run_id, task, line[:MAX_LINE]))
        self._wake.set()

    def flush(self) -> None:
        batch: list[tuple[str, str, str]] = []
        while self._buffer and len(batch) < 2_000:
            batch.append(self._buffer.popleft())
        if not batch:
            return
        by_key: dict[str, list[str]] = {}
        for run_id, task, line in batch:
            by_key.setdefault(keys.task_logs(run_id, task), []).append(line)
        pipe = self.r.pipeline(transaction=True)  # all or nothing: a batch put back is never written twice
        for key, lines in by_key.items():
            pipe.lpush(key, *lines)
            pipe.ltrim(key, 0, keys.TASK_LOG_LINES - 1)
            pipe.expire(key, self.ttl_s)
        try:
            pipe.execute()
        except redis.RedisError:
            # put back ahead of what came since, as much as fits: the batch holds the oldest lines, so what
            # does not fit is its oldest part (appendleft on a full deque would drop the newest instead)
            room = MAX_BUFFER - len(self._buffer)
            for item in reversed(batch[-room:] if room > 0 else []):
                self._buffer.appendleft(item)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._buffer:  # also what did not fit one pipeline, or waits for Redis to come back
                self.flush()
                time.sleep(FLUSH_S)  # batch what arrives meanwhile: one pipeline per interval


def configure(url: str | None, ttl_s: int) -> None:
    """Where task lines go (``url`` None: nowhere); called once by the worker's logging setup."""
    _config.update(url=url, ttl_s=ttl_s)


def sink() -> LogSink | None:
    """This process's sink (a forked pool process makes its own: threads do not survive a fork)."""
    url = _config.get("url")
    if not url:
        return None
    pid = os.getpid()
    found = _sinks.get(pid)
    if found is None:
        with _lock:
            found = _sinks.get(pid)
            if found is None:
                found = _sinks[pid] = LogSink(url, int(_config.get("ttl_s") or 7 * 24 * 3600))
    return found


def flush_this_process() -> None:
    """Write what this process still holds (a pool process exiting: its last lines are the telling ones)."""
    found = _sinks.get(os.getpid())
    if found is not None:
        try:
            while found._buffer:
                before = len(found._buffer)
                found.flush()
                if len(found._buffer) >= before:  # Redis away: give up, the JSON log has them
                    return
        except Exception:  # noqa: BLE001 - exiting anyway; never turn a shutdown into a crash
            return


def _reset_after_fork() -> None:
    """A child forked while another thread held the lock would inherit it held: give the child its own."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def keep_task_line(_logger: object, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: a copy of each task event (already masked) for the dashboard."""
    run_id, task = event_dict.get("run_id"), event_dict.get("task")
    if isinstance(run_id, str) and isinstance(task, str):
        target = sink()
        if target is not None:
            line = {"level": event_dict.get("level", method), **event_dict}
            target.add(run_id, task, json.dumps(line, default=str))
    return event_dict
