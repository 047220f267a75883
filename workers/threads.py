"""Helper threads in a worker leave every signal to the main thread.

A process-directed signal (SIGCHLD when a pool process dies, SIGTERM for a warm shutdown) may be
delivered to any thread that does not block it. If one of chordflow's helper threads (reaper,
scheduler, announcer, notifier, publisher, heartbeat, artifact writer) takes it while blocked in a system call, Python
runs the handler only when the main thread next wakes up: Celery noticed a killed pool process
seconds late. Each helper thread blocks all signals as its first act.
"""

from __future__ import annotations

import signal


def leave_signals_to_main_thread() -> None:
    """Block every (blockable) signal in the calling thread; the main thread keeps receiving them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})
