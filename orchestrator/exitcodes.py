"""The single table from outcome to process exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the ``chordflow`` command; 0 only when the run succeeded."""

    OK = 0  #: run succeeded / command did what was asked
    RUN_FAILED = 1  #: run ended failed (some task failed or upstream_failed)
    INVALID = 2  #: bad input: validation, usage, unknown run id
    CANCELLED = 3  #: run ended cancelled
    UNAVAILABLE = 4  #: Redis unreachable or refused the write; embedded stack did not start
    TIMEOUT = 5  #: gave up waiting (``--timeout``); the run goes on
    INTERRUPTED = 130  #: Ctrl-C


RUN_STATE_EXIT = {
    "succeeded": ExitCode.OK,
    "failed": ExitCode.RUN_FAILED,
    "cancelled": ExitCode.CANCELLED,
}
