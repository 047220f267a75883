"""The raw-Celery side of the benchmarks: a plain Celery app with chordflow's worker settings.

The conf is chordflow's own (``workers.app.celery_conf`` with default settings: json only, acks late,
reject on worker lost, prefetch multiplier 1, same visibility timeout and restore sweep), with task
events off as for chordflow's bench worker, its own queue, and results KEPT (a Redis result backend,
``task_ignore_result=False``): raw Celery has no other place to keep them.
The worker runs with the same flags as chordflow's (see bench/common.py):
``--without-gossip --without-mingle --without-heartbeat``, prefork, concurrency 2.

The broker/backend URL comes from ``BENCH_RAW_URL`` (the worker) or :func:`configure` (the driver).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, chain, chord, group

RAW_QUEUE = "raw"  # bench.common.RAW_QUEUE (not imported: keep the worker's imports minimal)

app = Celery("bench_raw", set_as_current=False)


def configure(url: str) -> Celery:
    from orchestrator.settings import Settings
    from workers.app import celery_conf

    conf = celery_conf(Settings(), url)
    conf.update(
        task_ignore_result=False,  # results kept (the one deliberate difference, see module doc)
        task_default_queue=RAW_QUEUE,
        worker_send_task_events=False,
    )
    app.conf.update(conf)
    return app


if os.environ.get("BENCH_RAW_URL"):
    configure(os.environ["BENCH_RAW_URL"])


@app.task(name="bench.raw.noop")
def noop(*args: Any, **kwargs: Any) -> None:
    """Does nothing; accepts (and ignores) whatever a chord or chain passes in."""
    return None


@app.task(name="bench.raw.sleep")
def sleep(seconds: float, *args: Any) -> None:
    time.sleep(seconds)


@app.task(name="bench.raw.collect")
def collect(results: Any = None) -> int:
    """A chord body / barrier between layers: returns how many results it received."""
    return len(results) if isinstance(results, list) else 1


@app.task(name="bench.raw.ident")
def ident(x: Any) -> Any:
    """One element of a map: returned as it is (bench.cf_tasks.ident's twin)."""
    return x


@app.task(name="bench.raw.total")
def total(results: list[Any]) -> Any:
    """A chord body reducing a map: the sum of its results."""
    return sum(results)


@app.task(name="bench.raw.total_nested")
def total_nested(results: list[list[Any]]) -> Any:
    """A chord body over ``chunks()``: every chunk task returns a list; the sum of all of them."""
    return sum(sum(r) for r in results)


# ---- canvases (built outside the timed region; apply_async is timed) ---------------------------


def fanout(n: int) -> Any:
    return group(noop.s() for _ in range(n))


def chain_of(n: int) -> Any:
    return chain(noop.si() for _ in range(n))


def _layer(width: int) -> Any:
    # .s(): every node of layer k receives the results of layer k-1 (a superset of its 2-3 parents),
    # which is the most a level-synchronised encoding can express.
    return group(noop.s() for _ in range(width))


def layered_nested_chords(width: int, depth: int) -> Any:
    """chord(g0, chord(g1, ... chord(g_{d-1}, collect))): 1 extra task (the final collect)."""
    body: Any = chord(_layer(width), collect.s())
    for _ in range(depth - 1):
        body = chord(_layer(width), body)
    return body


def layered_chain_of_chords(width: int, depth: int) -> Any:
    """chain(g0, collect, g1, collect, ..., g_{d-1}, collect): each group+collect becomes a chord.

    Never chain(group, group): Celery 5.7 duplicates executions there (celery#8180/#8662/#9020).
    """
    steps: list[Any] = []
    for _ in range(depth):
        steps += [_layer(width), collect.s()]
    return chain(*steps)


def exactness_chord(slow_s: float, chain_n: int, short_s: float) -> Any:
    """Best honest raw encoding of bench.cf_tasks.exactness, as series-parallel:
    chain(chord([S, chain(A, C1..Cn)], J), F). J now also waits for Cn (over-constrained but
    correct); F waits for J and, through J, for Cn."""
    c = chain(noop.si(), *[sleep.si(short_s) for _ in range(chain_n)])
    return chain(chord([sleep.si(slow_s), c], noop.si()), noop.si())


def exactness_levelled(slow_s: float, chain_n: int, short_s: float) -> Any:
    """The level-synchronised encoding: layers {A,S}, {C1,J}, {C2}, ..., {Cn}, {F} with a barrier
    task between the two groups (never chain(group, group))."""
    steps: list[Any] = [group(noop.si(), sleep.si(slow_s)), collect.si(), group(sleep.si(short_s), noop.si())]
    steps += [sleep.si(short_s) for _ in range(chain_n - 1)]
    steps.append(noop.si())
    return chain(*steps)


def map_chord(n: int) -> Any:
    """``chord(group(ident(i) for i in range(n)), total)``: a map + reduce as raw Celery writes it."""
    return chord(group(ident.s(i) for i in range(n)), total.s())


def per_item_group(n: int) -> Any:
    """One message per item: ``group(ident(i) ...)``; the driver sums ``.get()``."""
    return group(ident.s(i) for i in range(n))


def chunks_chord(n: int, chunk_size: int) -> Any:
    """Celery's own batching: ``ident.chunks(zip(range(n)), chunk_size)`` (``celery.starmap`` tasks of
    ``chunk_size`` calls each) as the header of a chord whose body sums every chunk's list."""
    return chord(ident.chunks(zip(range(n)), chunk_size).group(), total_nested.s())


def layered_task_count(width: int, depth: int, form: str) -> int:
    return width * depth + (1 if form == "nested" else depth)


def forget_results() -> None:
    """Before the bench Redis stops: make result objects still alive unsubscribe from nothing at exit
    (otherwise ``AsyncResult.__del__`` tries to reach the stopped Redis and prints a traceback)."""
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None and hasattr(consumer, "subscribed_to"):
        consumer.subscribed_to.clear()
