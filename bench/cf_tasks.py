"""chordflow tasks used by the benchmarks (workers import this module via
``CHORDFLOW_TASK_MODULES=bench.cf_tasks``), plus the pipeline shapes built from them.

Every shape here has an exact twin in :mod:`bench.raw_celery_app` and :mod:`bench.dask_peer`.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from orchestrator import MapResults, Pipeline, task


class SleepConfig(BaseModel):
    seconds: float = 0.0


@task(name="bench.noop")
def noop() -> None:
    """Does nothing (its result, ``null``, is still stored in the run's results hash)."""


@task(name="bench.sleep")
def sleep(config: SleepConfig) -> None:
    time.sleep(config.seconds)


class KeyConfig(BaseModel):
    key: int = 0  #: changes the fingerprint (bench/cache.py changes it on 1 % of the roots)


@task(name="bench.keyed")
def keyed(config: KeyConfig) -> None:
    """A cacheable no-op whose fingerprint a param can change."""


def layered_keyed(width: int, depth: int, changed: frozenset[int] = frozenset(), key: int = 0) -> Pipeline:
    """:func:`layered` of ``keyed`` tasks; roots in ``changed`` get ``key`` (a new fingerprint)."""
    p = Pipeline(f"cached-{width}x{depth}")
    for k in range(depth):
        for j in range(width):
            deps = [] if k == 0 else [f"n{k - 1}_{i}" for i in layered_parents(width, k, j)]
            params = {"key": key} if k == 0 and j in changed else {}
            p.add_task(keyed, name=f"n{k}_{j}", depends_on=deps, params=params)
    return p


def fanout(n: int) -> Pipeline:
    """``n`` independent no-ops (all roots)."""
    p = Pipeline(f"fanout-{n}")
    for i in range(n):
        p.add_task(noop, name=f"t{i}")
    return p


def one_job() -> Pipeline:
    """A web app's job: one no-op task (job latency)."""
    return Pipeline("job").add_task(noop, name="job")


def chain(n: int) -> Pipeline:
    """``n`` no-ops in sequence."""
    p = Pipeline(f"chain-{n}")
    for i in range(n):
        p.add_task(noop, name=f"c{i}", depends_on=[f"c{i - 1}"] if i else [])
    return p


def layered_parents(width: int, k: int, j: int) -> list[int]:
    """Parents (indices in layer k-1) of node j of layer k: j, j+1, j+7 (mod width), deduplicated."""
    return sorted({j % width, (j + 1) % width, (j + 7) % width})


def layered(width: int, depth: int) -> Pipeline:
    """``depth`` layers of ``width`` no-ops; each node depends on 2-3 nodes of the previous layer
    (the same shape as ``tests.pipelines.layered``)."""
    p = Pipeline(f"layered-{width}x{depth}")
    for k in range(depth):
        for j in range(width):
            deps = [] if k == 0 else [f"n{k - 1}_{i}" for i in layered_parents(width, k, j)]
            p.add_task(noop, name=f"n{k}_{j}", depends_on=deps)
    return p


def exactness(slow_s: float, chain_n: int, short_s: float) -> Pipeline:
    """A non-series-parallel DAG (an "N" inside it):

        A (fast root) -> C1 -> C2 -> ... -> Cn ---------\\
        A ------------------------------------> J --> F
        S (sleeps slow_s) --------------------> J

    C1..Cn sleep ``short_s`` each and depend only on A; J joins A and S; F joins J and Cn.
    Critical path = max(slow_s, n * short_s) (no-ops count as 0).
    """
    p = Pipeline("exactness")
    p.add_task(noop, name="A")
    p.add_task(sleep, name="S", params={"seconds": slow_s})
    for i in range(1, chain_n + 1):
        p.add_task(sleep, name=f"C{i}", depends_on=["A" if i == 1 else f"C{i - 1}"], params={"seconds": short_s})
    p.add_task(noop, name="J", depends_on=["A", "S"])
    p.add_task(noop, name="F", depends_on=["J", f"C{chain_n}"])
    return p


def critical_path_s(slow_s: float, chain_n: int, short_s: float) -> float:
    return max(slow_s, chain_n * short_s)


# ---- map nodes (scenario 6, bench/map.py) ------------------------------------------------------


class CountConfig(BaseModel):
    n: int = 0


@task(name="bench.elements")
def elements(config: CountConfig) -> list[int]:
    """What the map maps over: the ints 0 .. n-1 (decided at run time, as a map's width is)."""
    return list(range(config.n))


@task(name="bench.ident")
def ident(elements: int) -> int:
    """One element of the map: returned as it is (a no-op whose result still has to be kept)."""
    return elements


@task(name="bench.total")
def total(ident: MapResults[int]) -> int:
    """The reduce: streams the map's results in input order and sums them."""
    return sum(ident)


def map_reduce(n: int, batch_size: int = 1) -> Pipeline:
    """``elements(n) -> add_map(ident, batch_size) -> total``: ceil(n / batch_size) chunks, default
    ``max_in_flight`` (64)."""
    p = Pipeline(f"map-{n}-b{batch_size}")
    p.add_task(elements, params={"n": n})
    p.add_map(ident, over="elements", batch_size=batch_size)
    p.add_task(total, depends_on=["ident"])
    return p
