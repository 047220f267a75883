"""The asyncio client, for web apps: submit and watch runs without blocking the event loop.

>>> client = AsyncClient(load_settings(redis_url="redis://..."))
>>> run_id = await client.submit("etl", {"ingest": {"rows": 1000}})
>>> async for event_id, event in client.events(run_id):
...     print(event["kind"], event.get("node"), event.get("state") or event.get("progress"))
>>> (await client.wait(run_id)).state
'succeeded'

Submitting, cancelling and retrying run the sync :class:`~orchestrator.client.Client` in a
thread (they are a handful of quick round trips); watching is native ``redis.asyncio``: each
watcher blocks in ``XREAD`` on the run's event stream, which the ledger writes in the same
atomic step as every state change, so nothing polls.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from orchestrator import keys
from orchestrator.client import Client
from orchestrator.errors import RedisUnavailable, RunNotFound, RunStateLost
from orchestrator.registry import PublishedPipeline
from orchestrator.settings import Settings
from orchestrator.states import TERMINAL_RUN_STATES
from orchestrator.store import RunSnapshot, check_run_id

T = TypeVar("T")
Event = tuple[str, dict[str, str]]  #: (stream id, fields: kind, node, state, progress, at)
SCAN_BATCH = 200  #: run metas read per round trip when filtering recent runs
MAX_SCAN = 10_000  #: recent runs looked at, at most, to fill one filtered page
MAX_CONNECTIONS = 2_000  #: each watcher blocks on its own connection; past this, a watcher waits for one


def is_terminal(event: Mapping[str, str]) -> bool:
    """Whether ``event`` is the run's end (kind ``run`` with a terminal state)."""
    return event.get("kind") == "run" and event.get("state") in TERMINAL_RUN_STATES


def _redis_errors(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(self: AsyncClient, *args: Any, **kwargs: Any) -> T:
        try:
            return await fn(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"cannot reach Redis at {self.client.safe_url}: {exc}") from exc

    return wrapper


class AsyncClient:
    """Asyncio face of :class:`~orchestrator.client.Client`; one per process (it holds connection pools)."""

    def __init__(
        self, settings: Settings, client: Client | None = None, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self.client = client or Client(settings)
        self.settings = self.client.settings
        pool = aioredis.BlockingConnectionPool.from_url(
            self.settings.redis_url_value(), decode_responses=True, socket_connect_timeout=5, socket_keepalive=True,
            max_connections=max_connections, timeout=10,
        )  # fmt: skip
        self.r = aioredis.Redis(connection_pool=pool)
        self._pipelines_indexed = False

    async def aclose(self) -> None:
        await self.r.aclose()
        await self.r.connection_pool.disconnect()

    # -- in a thread: the sync client ------------------------------------------------------------

    async def submit(
        self, pipeline: Any, params: Mapping[str, Mapping[str, Any]] | None = None, *, notify: Any = None
    ) -> str:
        """:meth:`Client.submit` (by name: validated against the published schemas); returns the run id."""
        return await asyncio.to_thread(self.client.submit, pipeline, params, notify=notify)

    async def status(self, run_id: str, detail: bool = True) -> RunSnapshot:
        return await asyncio.to_thread(self.client.status, run_id, detail)

    async def results(self, run_id: str) -> dict[str, Any]:
        await asyncio.to_thread(self.client.store.require, run_id)
        return await asyncio.to_thread(self.client.results, run_id)

    async def cancel(self, run_id: str) -> str:
        return await asyncio.to_thread(self.client.cancel, run_id)

    async def retry(self, run_id: str) -> int:
        return await asyncio.to_thread(self.client.retry, run_id)

    async def pipelines(self) -> list[PublishedPipeline]:
        return await asyncio.to_thread(self.client.registry.all)

    async def pipeline(self, name: str) -> PublishedPipeline:
        return await asyncio.to_thread(self.client.registry.get, name)

    # -- native ------------------------------------------------------------------------------------

    @_redis_errors
    async def ping(self) -> bool:
        return bool(await self.r.ping())

    @_redis_errors
    async def runs(
        self, limit: int = 20, offset: int = 0, pipeline: str | None = None, state: str | None = None
    ) -> list[RunSnapshot]:
        """Recent runs, newest first, optionally only those of ``pipeline`` and/or in ``state``.

        Reads only what the page needs: without a state filter it slices the runs index (the
        pipeline's own index when filtered by pipeline) at ``offset``, so page 500 of 10,000 runs
        costs what page 1 does; a state filter scans at most ``MAX_SCAN`` runs.
        """
        index = keys.RUNS_INDEX
        if pipeline:
            await self.index_pipelines()
            index = keys.pipeline_runs(pipeline)
        for _ in range(3):  # runs that expired leave their index entries: drop those met, then read again
            page, gone = await self._runs_page(index, limit, offset, state)
            if not gone:
                break
            pipe = self.r.pipeline(transaction=False)
            pipe.zrem(index, *gone)
            pipe.zrem(keys.RUNS_INDEX, *gone)
            await pipe.execute()
        return page

    async def _runs_page(
        self, index: str, limit: int, offset: int, state: str | None
    ) -> tuple[list[RunSnapshot], list[str]]:
        """One read of a page of :meth:`runs`, and the ids met whose run has expired."""
        gone: list[str] = []
        direct = not state
        matched: list[RunSnapshot] = []
        start, skip = (offset, 0) if direct else (0, offset)
        sec, usec = await self.r.time()
        now = sec + usec / 1e6
        stop = offset + limit if direct else MAX_SCAN
        while len(matched) < skip + limit and start < stop:
            batch = limit - len(matched) if direct else SCAN_BATCH
            ids = await self.r.zrevrange(index, start, start + batch - 1)
            if not ids:
                break
            start += len(ids)
            pipe = self.r.pipeline(transaction=False)
            for rid in ids:
                pipe.hgetall(keys.run_keys(rid).meta)
            for rid, meta in zip(ids, await pipe.execute(), strict=True):
                if not meta:
                    gone.append(rid)
                    continue
                if state and meta.get("state", "pending") != state:
                    continue
                matched.append(RunSnapshot(rid, meta, now=now))
        return matched[skip : skip + limit], gone

    @_redis_errors
    async def index_pipelines(self) -> None:
        """Once per Redis: add the runs made before per-pipeline indexes existed to their pipeline's index
        (``create_run`` adds every new run). Idempotent, so two servers doing it at once is harmless."""
        if self._pipelines_indexed or await self.r.exists(keys.PIPELINES_INDEXED):
            self._pipelines_indexed = True
            return
        start = 0
        while pairs := await self.r.zrange(keys.RUNS_INDEX, start, start + 999, withscores=True):
            start += len(pairs)
            pipe = self.r.pipeline(transaction=False)
            for rid, _ in pairs:
                pipe.hget(keys.run_keys(rid).meta, "pipeline")
            names = await pipe.execute()
            pipe = self.r.pipeline(transaction=False)
            for (rid, score), name in zip(pairs, names, strict=True):
                if name is not None:
                    pipe.zadd(keys.pipeline_runs(name), {rid: score})
            await pipe.execute()
        await self.r.set(keys.PIPELINES_INDEXED, "1")
        self._pipelines_indexed = True

    @_redis_errors
    async def failed_tasks(self, run_ids: list[str], most: int = 5) -> dict[str, list[str]]:
        """Up to ``most`` failed tasks of each run (map chunks left out: their map fails with them).

        Candidates come from a bounded ``HSCAN`` of the run's errors (a task that failed has one), then
        their states: two round trips for a whole page of runs, whatever their size.
        """
        if not run_ids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hscan(keys.run_keys(rid).errors, 0, count=200)
            pipe.hkeys(keys.run_keys(rid).maps)  # a map fails through its chunks: it may have no error of its own
        answers = await pipe.execute()
        candidates = {}
        for i, rid in enumerate(run_ids):
            (_, found), map_fields = answers[2 * i], answers[2 * i + 1]
            names = {n for n in found if not n.endswith("]")} | {f.rpartition(":")[0] for f in map_fields}
            candidates[rid] = sorted(names)[:200]
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hmget(keys.run_keys(rid).state, candidates[rid] or ["-"])
        out: dict[str, list[str]] = {}
        for rid, states in zip(run_ids, await pipe.execute(), strict=True):
            out[rid] = [n for n, st in zip(candidates[rid], states, strict=False) if st == "failed"][:most]
        return out

    @_redis_errors
    async def read_events(self, run_id: str, after: str = "0-0", block_ms: int | None = None) -> list[Event]:
        """Events after stream id ``after``; with ``block_ms``, wait up to that long for the first one."""
        out = await self.r.xread({keys.run_keys(check_run_id(run_id)).events: after}, count=1000, block=block_ms)
        return [(eid, fields) for _, entries in out for eid, fields in entries]

    @_redis_errors
    async def run_state(self, run_id: str) -> str:
        """The run's state; raises :class:`RunNotFound` if it has no keys (unknown, or expired)."""
        meta = keys.run_keys(check_run_id(run_id)).meta
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(meta)
        pipe.hget(meta, "state")
        exists, state = await pipe.execute()
        if not exists:
            raise RunNotFound(f"no run '{run_id}' (unknown id, or its keys expired)")
        return state or "pending"

    async def events(self, run_id: str, after: str = "0-0", block_s: float = 5.0) -> AsyncIterator[Event]:
        """Every event of the run after ``after``, as it happens, up to and including the terminal one.

        Ends at once if the run is already over and nothing is left after ``after``.

        Raises:
            RunNotFound: no such run (checked first, and again whenever the stream is quiet).
        """
        await self.run_state(run_id)
        while True:
            batch = await self.read_events(run_id, after, block_ms=max(1, int(block_s * 1000)))
            for eid, fields in batch:
                yield eid, fields
                if is_terminal(fields):
                    return
            if batch:
                after = batch[-1][0]
            elif await self.run_state(run_id) in TERMINAL_RUN_STATES:
                return  # its terminal event was before ``after``

    async def wait(self, run_id: str, timeout_s: float | None = None) -> RunSnapshot:
        """The run's snapshot once it is terminal (or when ``timeout_s`` is up), blocking on its events."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        snap = await self.status(run_id)
        after = snap.last_event
        while not snap.finished:
            left = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
            if left <= 0:
                return snap
            batch = await self.read_events(run_id, after, block_ms=max(1, int(left * 1000)))
            if batch:
                after = batch[-1][0]
                if not any(is_terminal(f) for _, f in batch):
                    continue
            try:
                snap = await self.status(run_id)
            except RunNotFound:
                raise RunStateLost(f"run '{run_id}' vanished from Redis while running (state_lost)") from None
        return snap
