"""RetryPolicy -> tenacity: whether a failed attempt is retried, and after how long.

Attempts are not looped in-process: the runner asks :func:`next_wait` and, if
it gets a number, the ledger schedules the next attempt that many seconds later
by Redis time (its due index, woken by :mod:`workers.scheduler`), so a task
waiting out its backoff holds no worker slot, survives its worker's death, and
each attempt gets its own time limits. tenacity supplies the predicates and the
backoff curve.
"""

from __future__ import annotations

import sys

import tenacity

from orchestrator.spec import PermanentError, RetryPolicy, TransientError


def next_wait(policy: RetryPolicy, attempt: int, exc: BaseException, cap_s: float) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` when ``exc`` is final.

    Args:
        policy: the task's retry policy.
        attempt: number of the attempt that just failed (1-based).
        exc: what it raised.
        cap_s: upper bound on the wait (kept below the broker's visibility timeout).
    """
    if attempt >= policy.attempts or isinstance(exc, PermanentError):
        return None
    retry = tenacity.retry_if_exception_type(TransientError) | tenacity.retry_if_exception_type(policy.retry_on)
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, sys.exc_info()[2]))
    if not retry(state):
        return None
    wait = tenacity.wait_exponential_jitter(
        initial=policy.backoff_s, max=policy.backoff_max_s, exp_base=2, jitter=policy.jitter_s
    )
    return min(float(wait(state)), cap_s)
