"""Lease heartbeats: one thread per worker process renews the leases of running attempts.

A lease is short (``lease_s``, 30 s by default) and renewed every third of it
while the attempt runs, so an attempt whose process or host dies is noticed by
the reaper within about one lease, however long the task's own time limit is.
The clock is Redis ``TIME`` (inside the ledger script), never the worker's.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

from workers.logs import get_logger
from workers.threads import leave_signals_to_main_thread


class Heartbeat:
    """Tracks the attempts running in this process and keeps their leases alive."""

    def __init__(self, store: Any, lease_s: float) -> None:
        self.store = store
        self.lease_ms = int(lease_s * 1000)
        self.interval_s = lease_s / 3
        self._attempts: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def track(self, run_id: str, node: str, token: str) -> None:
        with self._lock:
            self._attempts[(run_id, node)] = token
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()  # threads do not survive fork: start one per process
            self._thread = threading.Thread(target=self._loop, name="chordflow-heartbeat", daemon=True)
            self._thread.start()

    def untrack(self, run_id: str, node: str) -> None:
        with self._lock:
            self._attempts.pop((run_id, node), None)

    def _still_tracked(self, run_id: str, node: str, token: str) -> bool:
        with self._lock:
            return self._attempts.get((run_id, node)) == token

    def _loop(self) -> None:
        leave_signals_to_main_thread()
        stop = threading.Event()
        while not stop.wait(self.interval_s):
            with self._lock:
                attempts = list(self._attempts.items())
            for (run_id, node), token in attempts:
                try:
                    if not self.store.heartbeat(run_id, node, token, self.lease_ms) and self._still_tracked(
                        run_id, node, token
                    ):  # not a race with the attempt's own settle: the lease really went to another attempt
                        get_logger(run_id=run_id, task=node).warning("task.lease_lost")
                        self.untrack(run_id, node)
                except redis.RedisError as exc:
                    get_logger(run_id=run_id, task=node).warning("task.heartbeat_failed", error=str(exc))
