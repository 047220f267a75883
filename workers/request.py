"""A Celery Request that tells the ledger when an attempt dies without settling.

The task body records every outcome it can see. Two it cannot: the pool
process being killed (SIGKILL, OOM, segfault) and the hard time limit. Both
are noticed only by the worker's main process, here.
"""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.worker.request import Request


class LedgerRequest(Request):
    """Celery's Request, plus ledger bookkeeping for lost and timed-out attempts."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            self._tell_ledger("timeout", f"hard time limit ({timeout}s) exceeded")
        super().on_timeout(soft, timeout)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        lost = isinstance(exc, WorkerLostError) or (
            isinstance(exc, SystemExit | KeyboardInterrupt) and not (self._already_cancelled or self._already_revoked)
        )
        if lost:
            self._tell_ledger("worker_lost", f"worker process lost: {exc}")
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def _tell_ledger(self, reason: str, message: str) -> None:
        runner = getattr(self.task, "chordflow_runner", None)
        args = self.args or ()
        if runner is None or len(args) != 2:
            return
        try:
            runner.on_lost(args[0], args[1], self.id, self.hostname or "", reason, message)
        except Exception as exc:  # never break Celery's own failure handling; the reaper is the backstop
            from workers.logs import get_logger

            get_logger(run_id=args[0], task=args[1]).error("task.lost_unrecorded", error=repr(exc))
