"""RunStore: the run ledger in Redis (C2 joins, C3 idempotent completion, C7 status).

Every transition goes through one Lua script (``lua/ledger.lua``), so
completing a task and releasing its children is one atomic, write-once step,
and each task costs two round trips: ``begin`` (claim + inputs) and
``succeed``/``fail``/``defer``. Creating a small run (id, state, roots) is one ledger call
(:meth:`RunStore.create_small`); a big one is a reservation and one MULTI/EXEC.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from orchestrator import keys
from orchestrator.errors import ChordflowError, RedisUnavailable, RunNotFound
from orchestrator.metrics import LEDGER_LATENCY
from orchestrator.states import TERMINAL_RUN_STATES

_DUE_LUA = """
-- due(limit): members of the due index whose time (Redis TIME) has come, and ms until the next one
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #nxt > 0 then wait = math.max(0, tonumber(nxt[2]) - now) end
return {due, wait}
"""
_RESERVE_LUA = """
-- reserve(run_id, ttl_s): claim the run's meta hash if nobody has it (a collision returns 0)
if redis.call('HSETNX', KEYS[1], 'run_id', ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""
_PROGRESS_LUA = """
-- progress(node, "done/total", maxlen): store it and announce it; a run that already ended (its keys have
-- a TTL) gives the same TTL to what this creates, so a late report never leaves a key behind forever
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'kind', 'progress', 'node', ARGV[1], 'progress', ARGV[2])
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
return 1
"""
CLOCK_REFRESH_S = 30.0  #: how long a Redis TIME reading is carried forward on the monotonic clock
HASH_CHUNK = 5000  #: fields per HSET, keeps single commands small
DISPATCH_CHUNK = 1000  #: roots per ledger call, keeps Redis responsive
SMALL_RUN = 1000  #: runs of at most this many nodes are created and started in one ledger call (create_small)


RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$", re.ASCII)


def check_run_id(run_id: str) -> str:
    """Refuse anything that is not a run id before it reaches a key name or a path."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise RunNotFound(f"'{run_id}' is not a run id (expected YYYYMMDD-HHMMSS-xxxxxx)")
    return run_id


def new_run_id(now: datetime | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxxxx``: UTC time + 24 random bits (uniqueness is enforced in Redis)."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def connect(url: str) -> redis.Redis:
    """A client that reconnects by itself (retries with backoff on connection errors).

    Raises:
        ChordflowError: the URL cannot be parsed (e.g. an unencoded ``/`` in the password); the
            message shows the URL with its credentials masked, never the parser's own message,
            which quotes part of the password.
    """
    try:
        return _from_url(url)
    except ValueError:
        from orchestrator.redact import mask_url_credentials

        raise ChordflowError(
            f"the Redis URL {mask_url_credentials(url)!r} cannot be parsed: use "
            "redis://user:password@host:port/db (user, password, port and db optional) and "
            "percent-encode '/', '@', ':', '#', '?' and spaces in the password (e.g. '/' as %2F)"
        ) from None


def _from_url(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=6),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def _out_of_memory(exc: Exception) -> bool:
    return "OOM" in str(exc) or "maxmemory" in str(exc)


def _creation_refused(run_id: str, exc: Exception) -> RedisUnavailable:
    """What a failed run creation tells the user (both ways of creating one: nothing was left behind)."""
    if _out_of_memory(exc):
        return RedisUnavailable(
            "Redis is out of memory (maxmemory reached, policy noeviction): nothing was created; "
            "free memory or raise maxmemory"
        )
    return RedisUnavailable(f"Redis refused to create run {run_id}: {exc}")


@dataclass
class Claim:
    """Answer of ``begin``: run the attempt, or why not."""

    status: str  #: run | done | cancelled | busy | not_ready | missing
    state: str = ""
    attempt: int = 0
    record: dict[str, Any] = field(default_factory=dict)
    parent_results: list[str | None] = field(default_factory=list)
    wait_ms: int = 0


@dataclass
class RunSnapshot:
    """What a status query sees of one run."""

    run_id: str
    meta: dict[str, str]
    states: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, str] = field(default_factory=dict)
    times: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    progress: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    maps: dict[str, dict[str, int]] = field(default_factory=dict)  #: per map node: chunk counts (see maps_of)
    now: float = 0.0  #: Redis time when the snapshot was taken (durations of unfinished work use it)
    last_event: str = "0-0"  #: id of the run's last event when the snapshot was taken (read events after it)

    @property
    def state(self) -> str:
        return self.meta.get("state", "pending")

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_RUN_STATES

    def counts(self) -> dict[str, int]:
        return {k[2:]: int(v) for k, v in self.meta.items() if k.startswith("n_")}


class RunStore:
    """All reads and writes of run state; one instance per process (after fork)."""

    def __init__(self, client: redis.Redis, ttl_s: int = 7 * 24 * 3600) -> None:
        self.r = client
        self.ttl_s = ttl_s
        source = resources.files("orchestrator").joinpath("lua/ledger.lua").read_text(encoding="utf-8")
        self._ledger = self.r.register_script(source)
        self._due_script = self.r.register_script(_DUE_LUA)
        self._reserve = self.r.register_script(_RESERVE_LUA)
        self._progress = self.r.register_script(_PROGRESS_LUA)
        self._ledger_source = source
        self._ledger_loaded = False
        self._clock: tuple[float, float] | None = None
        self._per_thread = threading.local()  # one store serves every thread of a process (threads pools too)

    # -- creation ---------------------------------------------------------------------------

    def redis_now(self) -> float:
        """Redis time without a round trip: Redis ``TIME`` read at most every ``CLOCK_REFRESH_S``, carried
        forward on this host's monotonic clock (never its wall clock, which may be off)."""
        mono = time.monotonic()
        if self._clock is None or mono - self._clock[1] > CLOCK_REFRESH_S:
            self._clock = (self.now(), time.monotonic())
        return self._clock[0] + (mono - self._clock[1])

    def reserve_run_id(self) -> str:
        """Reserve a fresh run id atomically (HSETNX + EXPIRE in one script), retrying on the rare collision."""
        for _ in range(20):
            run_id = self.fresh_run_id()
            # an abandoned reservation goes away after an hour; create_run persists it
            if self._reserve(keys=[keys.run_keys(run_id).meta], args=[run_id, 3600]):
                return run_id
        raise RedisUnavailable("could not reserve a unique run id after 20 attempts")

    def fresh_run_id(self) -> str:
        """A new run id by Redis time (ids sort across hosts); uniqueness is checked where it is claimed."""
        return new_run_id(datetime.fromtimestamp(self.redis_now(), UTC))

    def create_small(
        self,
        run_id: str,
        meta: dict[str, Any],
        records: dict[str, str],
        pending: dict[str, int],
        templates: dict[str, str],
        roots: list[str],
        creator: str | None = None,
    ) -> str | None:
        """Claim ``run_id``, write the run's static state and dispatch its roots in ONE round trip (ledger op
        ``create``): a job of up to ``SMALL_RUN`` nodes without cached nodes. All or nothing, like
        :meth:`create_run`.

        Returns the id of the run's last event (a waiter reads what comes after it; ``"0-0"`` when a re-sent
        call found its own run already created), or None if another run holds the id (pick another).
        """
        creator = creator or secrets.token_hex(8)  #: tells a re-sent call's own run from another's
        pipeline_index = keys.pipeline_runs(str(meta.get("pipeline", "")))
        args: list[Any] = ["create", run_id, creator, keys.RUNS_INDEX, pipeline_index, self.ttl_s]
        flat_meta = {key: (v if isinstance(v, str) else json.dumps(v)) for key, v in meta.items()}
        for section in (flat_meta, records, pending, templates):
            args.append(len(section))
            for k, v in section.items():
                args += (k, v)
        args += roots
        try:
            out = self._ledger(keys=_ledger_keys(run_id), args=args)
        except redis.RedisError as exc:
            try:  # undo what the script wrote if it was ours (an OOM stops a script at its first write)
                if self.r.hget(keys.run_keys(run_id).meta, "creator") == creator:
                    self._forget(run_id)
            except redis.RedisError:
                pass
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError) and not _out_of_memory(exc):
                raise
            raise _creation_refused(run_id, exc) from exc
        if int(out[0]) == 1:
            return str(out[1])
        return "0-0" if out[1] == creator else None  # a re-sent call (its first reply was lost) found its run

    def create_run(
        self,
        run_id: str,
        meta: dict[str, Any],
        records: dict[str, str],
        pending: dict[str, int],
        templates: dict[str, str],
        roots: list[str] | None = None,
        cached: list[tuple[str, str, str]] | None = None,
        retried: bool = False,
        map_items: list[tuple[str, list[str]]] | None = None,
    ) -> bool:
        """Write a reserved run's whole static state in one MULTI/EXEC (all or nothing).

        With ``roots`` (at most ``DISPATCH_CHUNK``), the same transaction also dispatches them: a small
        job costs two round trips to submit. Returns whether the roots were dispatched (if not, call
        :meth:`dispatch`: e.g. Redis lost its script cache in between).
        ``cached`` (node, result JSON, source run) are settled as ``cached`` in the same transaction,
        before the roots are dispatched (ledger op ``cached``); ``map_items`` are the chunk batches of maps
        over cached nodes (ledger op ``items``, before ``cached`` releases them).
        """
        k = keys.run_keys(run_id)
        created = self.redis_now()  # Redis time, not this host's clock: spans and ages agree across hosts
        with_roots = bool(roots) and len(roots or []) <= DISPATCH_CHUNK
        if (with_roots or cached) and not self._ledger_loaded:
            self.r.script_load(self._ledger_source)
            self._ledger_loaded = True
        pipe = self.r.pipeline(transaction=True)
        for chunk in _chunks(records.items()):
            pipe.hset(k.nodes, mapping=dict(chunk))
        for chunk in _chunks((n, "pending") for n in records):
            pipe.hset(k.state, mapping=dict(chunk))
        for chunk in _chunks(pending.items()):
            pipe.hset(k.pending, mapping=dict(chunk))
        pipe.hset(k.templates, mapping=templates)
        pipe.hset(
            k.meta,
            mapping={
                **{key: (v if isinstance(v, str) else json.dumps(v)) for key, v in meta.items()},
                "state": "pending",
                "created_at": f"{created:.6f}",
                "total": len(records),
                "remaining": len(records),
                "dispatched": 0,
                "ttl_s": self.ttl_s,
            },
        )
        pipe.zadd(keys.RUNS_INDEX, {run_id: created})
        pipe.zadd(keys.pipeline_runs(str(meta.get("pipeline", ""))), {run_id: created})
        pipe.sadd(keys.ACTIVE_RUNS, run_id)
        pipe.persist(k.meta)  # a run's keys never expire while it is active; the TTL starts when it ends
        if cached and map_items:
            pipe.evalsha(self._ledger.sha, len(_ledger_keys(run_id)), *_ledger_keys(run_id), "items", run_id,
                         *_flat_feeds(map_items))  # fmt: skip
        if cached:
            ledger_keys = _ledger_keys(run_id)
            pipe.evalsha(self._ledger.sha, len(ledger_keys), *ledger_keys, "cached", run_id,
                         *(x for triple in cached for x in triple))  # fmt: skip
        if with_roots:
            ledger_keys = _ledger_keys(run_id)
            pipe.evalsha(self._ledger.sha, len(ledger_keys), *ledger_keys, "dispatch", run_id, *(roots or []))
        try:
            results = pipe.execute(raise_on_error=False)
            if (cached or with_roots) and any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                # Redis lost its script cache (a restart) since we loaded the ledger: start over, once
                self._forget(run_id)
                if retried:
                    raise results[-1]
                self._ledger_loaded = False
                self.r.hsetnx(k.meta, "run_id", run_id)
                return self.create_run(run_id, meta, records, pending, templates, roots, cached, retried=True,
                                       map_items=map_items)  # fmt: skip
            errors = [r for r in results[:-1 if with_roots else None] if isinstance(r, Exception)]
            if errors:
                raise errors[0]
        except redis.RedisError as exc:
            self._forget(run_id)
            raise _creation_refused(run_id, exc) from exc
        if with_roots and isinstance(results[-1], Exception):
            self._ledger_loaded = False  # e.g. NOSCRIPT after a Redis restart: the caller dispatches
            return False
        return with_roots

    def _forget(self, run_id: str) -> None:
        try:
            pipeline = self.r.hget(keys.run_keys(run_id).meta, "pipeline")
            self.r.delete(*keys.run_keys(run_id).per_run())
            self.r.zrem(keys.RUNS_INDEX, run_id)
            if pipeline is not None:
                self.r.zrem(keys.pipeline_runs(pipeline), run_id)
            self.r.srem(keys.ACTIVE_RUNS, run_id)
        except redis.RedisError:
            pass

    def dispatch(self, run_id: str, nodes: list[str]) -> int:
        """Publish the given pending nodes (the roots); returns how many were dispatched."""
        total = 0
        for i in range(0, len(nodes), DISPATCH_CHUNK):
            total += int(self._call(run_id, "dispatch", *nodes[i : i + DISPATCH_CHUNK]))
        return total

    # -- transitions (called by workers) -----------------------------------------------------

    def begin(
        self, run_id: str, node: str, host: str, lease_ms: int, token: str, task_id: str, max_lost: int = 2
    ) -> Claim:
        """Claim an attempt of ``node``: lease, attempt number, its record and its parents' results.

        ``busy`` means another live attempt holds the lease; ``wait_ms`` says for how long at most.
        """
        out = self._call(run_id, "begin", node, host, lease_ms, token, task_id, max_lost)
        if out[0] == "busy":
            return Claim(status="busy", state=out[1], wait_ms=int(out[2]))
        if out[0] != "run":
            return Claim(status=out[0], state=out[1])
        return Claim(
            status="run",
            state="running",
            attempt=int(out[1]),
            record=json.loads(out[2]),
            parent_results=[v if v != "" else None for v in out[3:]],
        )

    def succeed(
        self, run_id: str, node: str, token: str, result_json: str, log_line: str, items: int = 0,
        feeds: Iterable[tuple[str, list[str]]] = (),
    ) -> str:  # fmt: skip
        """Record the result and release children; ``dup``/``stale`` if this attempt no longer owns the node.

        ``items``: what a map chunk processed (elements, or rows it reported). ``feeds``: (map node, chunk
        batches as JSON lists) for every map over ``node``, stored in the same atomic step.
        """
        out = self._call(run_id, "succeed", node, token, result_json, log_line, items, *_flat_feeds(feeds))
        self._per_thread.chain_task_id = out[2] if len(out) > 2 else None
        return str(out[0])

    @property
    def chain_task_id(self) -> str | None:
        """The Celery task id under which this thread's last ``succeed``'s Celery chain publishes the next hop."""
        return getattr(self._per_thread, "chain_task_id", None)

    def fail(self, run_id: str, node: str, token: str, error_json: str, log_line: str) -> str:
        return str(self._call(run_id, "fail", node, token, error_json, log_line)[0])

    def defer(self, run_id: str, node: str, token: str, error_json: str, log_line: str, wait_s: float) -> str:
        """This attempt failed; the next is due in ``wait_s`` by Redis time (woken by a worker's scheduler)."""
        return str(self._call(run_id, "defer", node, token, error_json, log_line, int(wait_s * 1000))[0])

    def lost(
        self, run_id: str, node: str, task_id: str, reason: str, error_json: str, log_line: str,
        max_lost: int, retry_wait_s: float | None,
    ) -> str:  # fmt: skip
        """An attempt died without settling (worker lost, hard timeout): requeue, retry or fail it."""
        wait_ms = -1 if retry_wait_s is None else int(retry_wait_s * 1000)
        return str(self._call(run_id, "lost", node, task_id, reason, error_json, log_line, max_lost, wait_ms)[0])

    def wake(self, run_id: str, node: str) -> str:
        """A due retry: publish it at the front of its queue (idempotent; only one caller acts)."""
        return str(self._call(run_id, "wake", node)[0])

    def reject(
        self, run_id: str, node: str, error_json: str, log_line: str, task_id: str = "", requeue: bool = False
    ) -> str:
        """A queued node's message reached a worker that does not know its task: requeue it for a worker that
        does (``requeue``), or fail it with the reason."""
        return str(self._call(run_id, "reject", node, error_json, log_line, task_id, "1" if requeue else "0")[0])

    def due(self, limit: int = 200) -> tuple[list[tuple[str, str]], float | None]:
        """Due (run_id, node) pairs by Redis time, and seconds until the next one (None: nothing scheduled)."""
        members, next_ms = self._due_script(keys=[keys.DUE], args=[limit])
        pairs = [tuple(m.split("|", 1)) for m in members]
        return [(p[0], p[1]) for p in pairs if len(p) == 2], None if int(next_ms) < 0 else int(next_ms) / 1000

    def now(self) -> float:
        """Redis server time (epoch seconds): the one clock every host agrees on."""
        sec, usec = self.r.time()
        return sec + usec / 1e6

    def heartbeat(self, run_id: str, node: str, token: str, lease_ms: int) -> bool:
        """Extend a live attempt's lease; False if the attempt no longer owns the node."""
        return bool(self._call(run_id, "heartbeat", node, token, lease_ms))

    def reap(self, run_id: str, max_lost: int, stale_ms: int, lost_ms: int | None = None) -> int:
        """Requeue (or fail) attempts whose lease expired; re-dispatch nodes queued over ``lost_ms`` whose
        message is nowhere (neither reserved nor queued), and any queued over ``stale_ms``."""
        lost_ms = stale_ms if lost_ms is None else lost_ms
        return int(self._call(run_id, "reap", max_lost, stale_ms, lost_ms, keys.KOMBU_UNACKED))

    def active_runs(self) -> list[str]:
        return sorted(self.r.smembers(keys.ACTIVE_RUNS))

    def retry(self, run_id: str) -> tuple[str, int]:
        """Re-run the failed/upstream_failed/cancelled nodes of a finished run; returns (status, how many)."""
        self.require(run_id)
        out = self._call(run_id, "retry")
        return out[0], int(out[1]) if out[0] == "ok" else 0

    def cancel(self, run_id: str) -> tuple[str, list[str]]:
        """Set the persistent cancel flag; returns (status, Celery ids of attempts to terminate)."""
        self.require(run_id)
        out = self._call(run_id, "cancel")
        return out[0], [t for t in out[2:] if t]

    def set_progress(self, run_id: str, node: str, done: int, total: int) -> None:
        """Store a node's progress and announce it on the run's event stream (one round trip)."""
        k = keys.run_keys(run_id)
        self._progress(keys=[k.meta, k.progress, k.events], args=[node, f"{done}/{total}", keys.EVENTS_MAXLEN])

    def events(
        self, run_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 1000
    ) -> list[tuple[str, dict[str, str]]]:
        """Events of the run after stream id ``after``; with ``block_ms``, wait up to that long for one."""
        out = self.r.xread({keys.run_keys(run_id).events: after}, count=count, block=block_ms)
        return [(eid, fields) for _, entries in out for eid, fields in entries]

    def watch(
        self, run_id: str, after: str, block_ms: int, count: int = 1000
    ) -> tuple[list[tuple[str, dict[str, str]]], dict[str, str], float]:
        """One round trip: the run's events after ``after`` (waiting up to ``block_ms`` for the first), then its
        meta and Redis time, read the moment the events are there (pipelined behind the blocking read).
        An empty meta means the run's keys are gone."""
        k = keys.run_keys(run_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.xread({k.events: after}, count=count, block=block_ms)
        pipe.time()
        pipe.hgetall(k.meta)
        out, (sec, usec), meta = pipe.execute()
        return [(eid, fields) for _, entries in (out or []) for eid, fields in entries], meta, sec + usec / 1e6

    def _call(self, run_id: str, op: str, *args: Any) -> Any:
        started = time.perf_counter()
        out = self._ledger(keys=_ledger_keys(run_id), args=[op, run_id, *args])
        LEDGER_LATENCY.observe(self.r, op, time.perf_counter() - started)  # in memory; flushed now and then
        return out

    # -- reads --------------------------------------------------------------------------------

    def require(self, run_id: str) -> None:
        check_run_id(run_id)
        if not self.r.exists(keys.run_keys(run_id).meta):
            raise RunNotFound(f"no run '{run_id}' (unknown id, or its keys expired)")

    def snapshot(self, run_id: str, detail: bool = True) -> RunSnapshot:
        """Meta and, with ``detail``, per-node state/attempts/times/hosts/progress/errors (pipelined)."""
        k = keys.run_keys(check_run_id(run_id))
        pipe = self.r.pipeline(transaction=True)  # one consistent view, and the event id it corresponds to
        pipe.time()
        pipe.xrevrange(k.events, count=1)
        if not detail:
            pipe.hgetall(k.meta)
            (sec, usec), last, meta = pipe.execute()
            if not meta:
                raise RunNotFound(f"no run '{run_id}' (unknown id, or its keys expired)")
            return RunSnapshot(run_id, meta, now=sec + usec / 1e6, last_event=last[0][0] if last else "0-0")
        for key in (k.meta, k.state, k.attempts, k.times, k.hosts, k.progress, k.errors, k.maps):
            pipe.hgetall(key)
        (sec, usec), last, meta, states, attempts, times, hosts, progress, errors, maps = pipe.execute()
        if not meta:
            raise RunNotFound(f"no run '{run_id}' (unknown id, or its keys expired)")
        # chunks' errors and live progress are left out: the map's counts stand for them (see map_chunks)
        progress, errors = ({n: v for n, v in d.items() if not n.endswith("]")} for d in (progress, errors))
        return RunSnapshot(run_id, meta, states, attempts, times, hosts, progress, errors, maps_of(maps),
                           now=sec + usec / 1e6, last_event=last[0][0] if last else "0-0")  # fmt: skip

    def maps(self, run_id: str) -> dict[str, dict[str, int]]:
        """Per map node: total chunks, succeeded, failed (failed/upstream_failed/cancelled), running, queued
        (queued or retrying), pending, items (elements or reported rows done)."""
        raw = self.r.hgetall(keys.run_keys(run_id).maps)
        return maps_of(raw)

    def chunk_rows(self, run_id: str, node: str, start: int, stop: int) -> list[tuple[str, str | None, str | None]]:
        """(state, result JSON, error JSON) of chunks ``start..stop-1`` of map ``node`` (one round trip)."""
        k = keys.run_keys(run_id)
        names = [f"{node}[{i}]" for i in range(start, stop)]
        if not names:
            return []
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(k.chunks, names)
        pipe.hmget(k.chunk_io, [f"{n}:out" for n in names])
        pipe.hmget(k.errors, names)
        states, outs, errors = pipe.execute()
        return [(st or "pending", out, err) for st, out, err in zip(states, outs, errors, strict=True)]

    def failed_chunks(self, run_id: str, node: str, limit: int = 100) -> list[dict[str, Any]]:
        """Chunks of map ``node`` that did not succeed (index, state, error), at most ``limit``, by index."""
        k = keys.run_keys(run_id)
        prefix = f"{node}["
        out = []
        for name, st in self.chunk_states(run_id, node, limit=10**9).items():
            if st in ("failed", "upstream_failed", "cancelled") and name.startswith(prefix):
                out.append({"chunk": int(name[len(prefix) : -1]), "state": st})
        out.sort(key=lambda c: c["chunk"])
        out = out[:limit]
        if out:
            errors = self.r.hmget(k.errors, [f"{node}[{c['chunk']}]" for c in out])
            for c, err in zip(out, errors, strict=True):
                c["error"] = json.loads(err) if err else None
        return out

    def chunk_states(self, run_id: str, node: str, limit: int = 1000) -> dict[str, str]:
        """States of the chunks of map ``node`` that were dispatched (at most ``limit``, scanned)."""
        out: dict[str, str] = {}
        for name, st in self.r.hscan_iter(keys.run_keys(run_id).chunks, match=f"{_glob_escape(node)}[[]*", count=1000):
            out[name] = st
            if len(out) >= limit:
                break
        return out

    def attempts(self, run_id: str, node: str) -> int:
        """Attempts started of a node or a map chunk (``"<map>[<i>]"``, kept with the chunk, see ledger.lua)."""
        k = keys.run_keys(run_id)
        if node.endswith("]"):
            return int(self.r.hget(k.chunk_io, f"{node}:attempts") or 0)
        return int(self.r.hget(k.attempts, node) or 0)

    def node_states(self, run_id: str) -> dict[str, str]:
        return self.r.hgetall(keys.run_keys(run_id).state)

    def results(self, run_id: str) -> dict[str, Any]:
        return {n: json.loads(v) for n, v in self.r.hgetall(keys.run_keys(run_id).results).items()}

    def attempt_log(self, run_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(keys.run_keys(run_id).attempt_log, 0, -1)]

    def recent_runs(self, limit: int = 20) -> list[RunSnapshot]:
        ids = self.r.zrevrange(keys.RUNS_INDEX, 0, limit - 1)
        pipe = self.r.pipeline(transaction=False)
        pipe.time()
        for run_id in ids:
            pipe.hgetall(keys.run_keys(run_id).meta)
        (sec, usec), *metas = pipe.execute()
        now = sec + usec / 1e6
        return [RunSnapshot(rid, meta, now=now) for rid, meta in zip(ids, metas, strict=True) if meta]


@functools.lru_cache(maxsize=1024)
def _ledger_keys(run_id: str) -> list[str]:
    return keys.run_keys(run_id).ordered()


def check_redis_config(client: redis.Redis) -> tuple[list[str], list[str]]:
    """(errors, warnings) about a Redis that would lose work: eviction policies, no persistence.

    An evicting Redis drops queued messages and run state silently (celery#5716), so any
    ``maxmemory-policy`` but ``noeviction`` is an error. No persistence is a warning: fine for a
    throwaway dev Redis, fatal for a nightly batch when Redis restarts.
    """
    try:
        config = client.config_get("maxmemory-policy")
        config.update(client.config_get("appendonly"))
        config.update(client.config_get("save"))
    except redis.ResponseError:  # CONFIG disabled (managed Redis): cannot tell
        return [], ["cannot read Redis CONFIG; make sure maxmemory-policy is noeviction and persistence is on"]
    errors, warnings = [], []
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        errors.append(
            f"Redis maxmemory-policy is {policy}: it can evict queued tasks and run state; set it to noeviction"
        )
    if config.get("appendonly") != "yes" and not config.get("save"):
        warnings.append("Redis has no persistence (appendonly no, no save points): a restart loses queued work")
    return errors, warnings


def maps_of(raw: dict[str, str]) -> dict[str, dict[str, int]]:
    """The ``maps`` hash (``<map>:<field>`` -> number) as per-map counts (see :meth:`RunStore.maps`)."""
    by_map: dict[str, dict[str, int]] = {}
    for key, value in raw.items():
        node, _, f = key.rpartition(":")
        by_map.setdefault(node, {})[f] = int(value)
    out = {}
    for node, f in by_map.items():
        if "total" not in f:
            continue
        out[node] = {
            "total": f["total"],
            "succeeded": f.get("n_succeeded", 0) + f.get("n_cached", 0),
            "failed": f.get("n_failed", 0) + f.get("n_upstream_failed", 0) + f.get("n_cancelled", 0),
            "running": f.get("n_running", 0),
            "queued": f.get("n_queued", 0) + f.get("n_retrying", 0),
            "pending": f.get("n_pending", 0),
            "items": f.get("items", 0),
            "allowed_failures": f.get("allowed", 0),
        }
    return out


def _flat_feeds(feeds: Iterable[tuple[str, list[str]]]) -> list[Any]:
    out: list[Any] = []
    for node, batches in feeds:
        out += [node, len(batches), *batches]
    return out


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in text)


def _chunks(items: Iterable[Any], size: int = HASH_CHUNK) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
