"""Writes each task's ``result.json`` and ``metadata.json`` off the task's critical path.

A tiny task spends more time creating its artifact directory and files than
running; a pool process also spends half its time waiting for its next
message. One writer thread per pool process does the file work in that wait.
The path is checked (no escape from the artifact root) before the task settles;
only the I/O is deferred. Pending writes are flushed when the pool process
shuts down; a process killed outright may lose its last few files, never a
result (results live in the run ledger).
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable

from workers.logs import get_logger
from workers.threads import leave_signals_to_main_thread

MAX_PENDING = 10_000


class ArtifactWriter:
    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(MAX_PENDING)
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` soon in the writer thread (or now, if the backlog is full)."""
        if self._thread is None or self._pid != os.getpid():
            self._start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._run(job)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every submitted write is done (used at shutdown and by tests)."""
        if self._thread is None or self._pid != os.getpid():
            return
        done = threading.Event()
        self._queue.put(done.set)
        done.wait(timeout_s)

    def _start(self) -> None:
        self._pid = os.getpid()  # threads do not survive fork: one per process
        self._queue = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._loop, name="chordflow-artifacts", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def _loop(self) -> None:
        leave_signals_to_main_thread()
        while True:
            self._run(self._queue.get())

    @staticmethod
    def _run(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # a full disk (or any bug in a job) must not stop the writer; the result is in Redis
            get_logger(component="artifacts").error("artifacts.write_failed", error=str(exc))


WRITER = ArtifactWriter()
