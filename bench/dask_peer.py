"""The Dask peer column: the same shapes on ``dask.distributed.LocalCluster`` (2 worker
processes x 1 thread, nannies, scheduler in the driver process), with exact per-node dependencies
expressed as futures passed to ``client.submit``.

Runs after the Celery phase, when no Celery worker or Redis is running, one benchmark at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.cf_tasks import layered_parents


def noop(*args: Any) -> None:
    return None


def sleep(seconds: float, *args: Any) -> None:
    time.sleep(seconds)


@contextmanager
def cluster(workers: int = 2) -> Iterator[Any]:
    """A LocalCluster + Client, always closed (even on Ctrl-C)."""
    from dask.distributed import Client, LocalCluster

    c = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        client = Client(c)
        try:
            client.gather(client.map(noop, range(20), pure=False))  # warm-up
            yield client
        finally:
            client.close()
    finally:
        c.close()


def fanout(client: Any, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    futs = client.map(noop, range(n), pure=False)
    submit = time.perf_counter() - t0
    vals = client.gather(futs)
    e2e = time.perf_counter() - t0
    assert len(vals) == n
    del futs
    return {"submit_s": submit, "e2e_s": e2e}


def chain(client: Any, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    f = client.submit(noop, pure=False)
    for _ in range(n - 1):
        f = client.submit(noop, f, pure=False)
    f.result()
    e2e = time.perf_counter() - t0
    del f
    return {"e2e_s": e2e}


def layered(client: Any, width: int, depth: int) -> dict[str, float]:
    t0 = time.perf_counter()
    prev: list[Any] = []
    for k in range(depth):
        cur = [
            client.submit(noop, *([] if k == 0 else [prev[i] for i in layered_parents(width, k, j)]), pure=False)
            for j in range(width)
        ]
        prev = cur
    submit = time.perf_counter() - t0
    client.gather(prev)
    e2e = time.perf_counter() - t0
    del prev, cur
    return {"submit_s": submit, "e2e_s": e2e}


def exactness(client: Any, slow_s: float, chain_n: int, short_s: float) -> dict[str, float]:
    t0 = time.perf_counter()
    a = client.submit(noop, pure=False)
    s = client.submit(sleep, slow_s, pure=False)
    c = a
    for _ in range(chain_n):
        c = client.submit(sleep, short_s, c, pure=False)
    j = client.submit(noop, a, s, pure=False)
    f = client.submit(noop, j, c, pure=False)
    f.result()
    e2e = time.perf_counter() - t0
    del a, s, c, j, f
    return {"e2e_s": e2e}
