"""The Python client: submit, status, wait, cancel. The CLI (and later the API) call this.

>>> client = Client(load_settings(redis_url="redis://..."))
>>> run_id = client.submit(pipeline)
>>> client.wait(run_id).state
'succeeded'
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import redis

from orchestrator.cache import CachePlan, prepare
from orchestrator.compile import node_records, templates
from orchestrator.errors import (
    ParamOverrideError,
    RedisMisconfigured,
    RedisUnavailable,
    RunNotFinished,
    RunNotFound,
    RunStateLost,
    Unroutable,
)
from orchestrator.fingerprint import FileHasher
from orchestrator.fleet import Fleet, unroutable
from orchestrator.keys import NOTIFY, run_keys, run_notifications
from orchestrator.limits import Limits
from orchestrator.map_results import split
from orchestrator.model import Pipeline
from orchestrator.notify import NotifyConfig, effective
from orchestrator.plan import ExecutionPlan, build_plan
from orchestrator.registry import Registry
from orchestrator.settings import Settings
from orchestrator.states import TERMINAL_RUN_STATES
from orchestrator.store import SMALL_RUN, RunSnapshot, RunStore, check_redis_config, check_run_id, connect

T = TypeVar("T")
PLANS_KEPT = 64  #: pipelines whose plan a client keeps for their next submit
CREATED_KEPT = 10_000  #: runs created by a client whose last event it remembers for wait
COALESCE_S = 0.05  #: how long Client.wait gathers events of a running run before re-reading its state


def _redis_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn connection problems into one clear :class:`RedisUnavailable`."""

    @functools.wraps(fn)
    def wrapper(self: Client, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"cannot reach Redis at {self.safe_url}: {exc}") from exc
        except redis.ResponseError as exc:
            if "OOM" in str(exc) or "maxmemory" in str(exc):
                raise RedisUnavailable(
                    f"Redis at {self.safe_url} is out of memory (maxmemory reached): nothing was created"
                ) from exc
            raise RedisUnavailable(f"Redis at {self.safe_url} refused the command: {exc}") from exc

    return wrapper


class Client:
    """Talks to the run ledger in Redis; needs no worker on this host."""

    def __init__(self, settings: Settings) -> None:
        from workers.app import create_app  # the Celery app: message templates and revoke

        self.settings = settings
        self.store = RunStore(connect(settings.redis_url_value()), settings.run_ttl_s)
        self.app = create_app(settings)
        self.warnings: list[str] = []
        self._checked = False
        self.fleet = Fleet(self.store.r)
        self.registry = Registry(self.store.r)
        self._created: dict[str, str] = {}  #: run id -> its last event when this client created it (see wait)
        self._created_lock = threading.Lock()
        self._plans: dict[tuple[Any, ...], _Prepared] = {}  #: see _prepared
        self._plans_lock = threading.Lock()
        self._hash_file: Path | None = None

    @_redis_errors
    def check_redis(self) -> list[str]:
        """Refuse a Redis that would evict work; return warnings (no persistence). Checked once."""
        if not self._checked:
            errors, self.warnings = check_redis_config(self.store.r)
            if errors:
                raise RedisMisconfigured("; ".join(errors))
            self._checked = True
        return self.warnings

    @property
    def safe_url(self) -> str:
        from orchestrator.redact import redact

        return str(redact(self.settings.redis_url_value()))

    def plan(self, pipeline: Pipeline) -> ExecutionPlan:
        """Validate and plan (raises :class:`PipelineInvalid`); touches no Redis."""
        return build_plan(
            pipeline, self.settings.default_queue, self.settings.max_chain, Limits.from_settings(self.settings)
        )

    @_redis_errors
    def cache_plan(
        self, pipeline: Pipeline, plan: ExecutionPlan, fps: dict[str, Any] | None = None, **options: Any
    ) -> CachePlan:
        """Fingerprints and cache decisions for ``plan`` (options: force, force_tasks, resume_from, from_run;
        ``fps``: fingerprints already computed for this very pipeline)."""
        if self._hash_file is None:  # resolved once: it only locates a speed-up cache of file hashes
            self._hash_file = self.settings.state_path() / "filehash.json"
        hasher = FileHasher(self._hash_file)
        return prepare(self.store.r, pipeline, plan, hasher, use_cache=self.settings.use_cache, fps=fps, **options)

    def _prepared(self, pipeline: Pipeline) -> _Prepared:
        """The plan (and, lazily, message templates and fingerprints) of ``pipeline``, reused when the same
        pipeline is submitted again: same name, and node for node the same task object, dependencies, map
        and params (compared as canonical JSON, so a pipeline changed in place is planned again). Params that
        are not plain JSON are never reused. Fingerprints are reused only when no task hashes input files."""
        key = _plan_key(pipeline, self.settings)
        if key is not None:
            with self._plans_lock:
                hit = self._plans.get(key)
            if hit is not None and len(hit.specs) == len(pipeline.nodes) and all(
                a is n.spec for a, n in zip(hit.specs, pipeline.nodes, strict=True)
            ):
                return hit
        prepared = _Prepared(tuple(n.spec for n in pipeline.nodes), self.plan(pipeline))
        if key is not None:
            with self._plans_lock:
                self._plans[key] = prepared
                while len(self._plans) > PLANS_KEPT:
                    del self._plans[next(iter(self._plans))]
        return prepared

    @_redis_errors
    def submit(
        self,
        pipeline: Pipeline | str,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        notify: NotifyConfig | Mapping[str, Any] | None = None,
        **cache_options: Any,
    ) -> str:
        """Validate, create the run in Redis and dispatch its roots; returns the ``run_id`` at once.

        ``pipeline`` is a :class:`Pipeline` or the name of a published one (see :mod:`orchestrator.registry`):
        by name, ``params`` are checked against the published JSON Schemas, so no task code is imported
        (and the cache is not consulted: fingerprints need the task code).
        ``notify`` (``{"webhooks": [...], "emails": [...], "on": [...]}``) adds to the pipeline's
        ``[notify]``; workers announce the run's end there (see :mod:`workers.notifier`).
        Nodes whose fingerprint has a live cache entry are settled ``cached`` in the same transaction,
        before the roots are dispatched (``cache_options``: see :meth:`cache_plan`).

        Raises:
            PipelineInvalid: before anything is written.
            PipelineNotFound: no pipeline of that name was published.
            RedisUnavailable: Redis unreachable or refused the write (nothing half-created is left).
            Unroutable: ``refuse_unroutable`` is set and no live worker can take some task.
        """
        if isinstance(pipeline, str):
            published = self.registry.get(pipeline)
            plan = published.plan_with(params, Limits.from_settings(self.settings))
            base = NotifyConfig.model_validate(published.notify) if published.notify else None
            return self._create(plan, published.source, effective(base, notify), None)
        if params:
            pipeline = pipeline.with_params(params)
        prepared = self._prepared(pipeline)
        return self._create(prepared.plan, pipeline.source or "", effective(pipeline.notify, notify), pipeline,
                            prepared, **cache_options)  # fmt: skip

    def _create(
        self, plan: ExecutionPlan, source: str, notify_cfg: NotifyConfig | None, pipeline: Pipeline | None,
        prepared: _Prepared | None = None, **cache_options: Any,
    ) -> str:  # fmt: skip
        self.check_redis()
        if self.settings.refuse_unroutable:
            problems = self.unroutable(plan)
            if problems:
                raise Unroutable("nothing was submitted: " + "; ".join(problems))
        cached: list[tuple[str, str, str]] = []
        extra = None
        if pipeline is not None:
            reusable = prepared if prepared is not None and prepared.fps_reusable else None
            cache = self.cache_plan(pipeline, plan, reusable.fps if reusable else None, **cache_options)
            if reusable is not None:
                reusable.fps = cache.fps
            specs = {n.name: n.spec for n in pipeline.nodes}
            cached, extra = cache.cached, cache.record_fields(specs, record=self.settings.use_cache)
        hits = {n for n, _, _ in cached}
        roots = [n for n in plan.roots if n not in hits]
        map_items = [
            (child, split(json.loads(result), plan.nodes[child].map["batch_size"]))
            for n, result, _ in cached
            for child in plan.nodes[n].children
            if plan.nodes[child].map is not None and plan.nodes[child].map["over"] == n
            and not plan.nodes[child].map["stream"] and isinstance(json.loads(result), list)
        ]  # the chunks of maps over a cached node (a worker splits the result of one that runs)
        meta: dict[str, Any] = {"pipeline": plan.pipeline, "source": source}
        if notify_cfg is not None:
            meta["notify"] = notify_cfg.model_dump_json()
        pending = {n: len(p.parents) for n, p in plan.nodes.items() if p.parents}
        if not cached and not map_items and roots and len(plan.nodes) <= SMALL_RUN:
            # a small job: id, state and roots in one round trip
            if prepared is None:
                tmpl = templates(self.app, plan)
            else:
                tmpl = prepared.templates = prepared.templates or templates(self.app, plan)
            for _ in range(20):
                run_id = self.store.fresh_run_id()
                records = node_records(self.app, run_id, plan, extra)
                after = self.store.create_small(run_id, meta, records, pending, tmpl, roots)
                if after is not None:
                    self._remember_created(run_id, after)
                    return run_id
            raise RedisUnavailable("could not reserve a unique run id after 20 attempts")
        run_id = self.store.reserve_run_id()
        if not self.store.create_run(
            run_id,
            meta=meta,
            records=node_records(self.app, run_id, plan, extra),
            pending=pending,
            templates=templates(self.app, plan),
            roots=roots,
            cached=cached,
            map_items=map_items,
        ) and roots:
            self._dispatch_roots(run_id, roots)
        return run_id

    def _dispatch_roots(self, run_id: str, roots: list[str]) -> None:
        """Dispatch is idempotent (only pending nodes are pushed): retry it; if Redis stays away,
        cancel the run so it does not sit half-started forever."""
        for attempt in range(3):
            try:
                self.store.dispatch(run_id, roots)
                return
            except redis.RedisError as exc:
                last = exc
                time.sleep(0.5 * (attempt + 1))
        try:
            self.store.cancel(run_id)
        except redis.RedisError:
            pass
        raise RedisUnavailable(f"run {run_id} was created but its first tasks could not be queued: {last}")

    @_redis_errors
    def unroutable(self, plan: ExecutionPlan) -> list[str]:
        """Why some of the plan's tasks cannot start now: no live worker consumes their queue or knows them."""
        needs = {(n.task, n.queue) for n in plan.nodes.values()}
        return unroutable(needs, self.fleet.live())

    @_redis_errors
    def stalled(self, snap: RunSnapshot, after_s: float = 3.0) -> list[str]:
        """For nodes queued longer than ``after_s`` (Redis time): why no live worker takes them, if none can.

        Reads each waiting node's record (task, queue) and the worker registry; empty when every waiting
        node has a live worker that could take it (it is merely behind other work).
        """
        waiting = [
            n for n, st in snap.states.items()
            if st == "queued" and snap.now - float(snap.times.get(f"{n}:queued", snap.now)) >= after_s
        ]  # fmt: skip
        if not waiting:
            return []
        records = self.store.r.hmget(run_keys(snap.run_id).nodes, waiting[:200])
        needs = {(r["task"], r["q"]) for r in (json.loads(x) for x in records if x)}
        oldest = max(snap.now - float(snap.times.get(f"{n}:queued", snap.now)) for n in waiting)
        return [f"queued {oldest:.0f} s: {p}" for p in unroutable(needs, self.fleet.live())]

    @_redis_errors
    def publish(self, path: str) -> tuple[Any, bool]:
        """Validate and publish a pipeline file (see :func:`orchestrator.registry.publish_file`)."""
        from orchestrator.registry import publish_file

        return publish_file(self.registry, path, self.settings)

    @_redis_errors
    def status(self, run_id: str, detail: bool = True) -> RunSnapshot:
        return self.store.snapshot(run_id, detail=detail)

    @_redis_errors
    def runs(self, limit: int = 20) -> list[RunSnapshot]:
        return self.store.recent_runs(limit)

    @_redis_errors
    def notifications(self, run_id: str) -> list[dict[str, Any]]:
        """Every notification delivery attempt of the run, oldest first (see :mod:`workers.notifier`)."""
        raw = self.store.r.lrange(run_notifications(check_run_id(run_id)), 0, -1)
        return [json.loads(x) for x in raw]

    @_redis_errors
    def notifications_pending(self, run_id: str, wait_s: float = 0.0) -> bool:
        """Whether the run's end is still waiting in the outbox to be announced (after up to ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while self.store.r.zscore(NOTIFY, run_id) is not None:
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.05)
        return False

    @_redis_errors
    def results(self, run_id: str) -> dict[str, Any]:
        return self.store.results(run_id)

    @_redis_errors
    def cancel(self, run_id: str) -> str:
        """Set the persistent cancel flag and terminate running attempts; returns the run's state."""
        status, running = self.store.cancel(run_id)
        if running:
            self.app.control.revoke(running, terminate=True, signal="SIGTERM")
        return self.store.snapshot(run_id, detail=False).state if status == "ok" else status

    @_redis_errors
    def retry(self, run_id: str) -> int:
        """Re-run only the failed, upstream_failed and cancelled tasks of a finished run (same run id).

        Raises:
            RunNotFinished: the run is still pending or running.
        """
        status, count = self.store.retry(run_id)
        if status == "not_finished":
            raise RunNotFinished(f"run '{run_id}' has not finished; cancel it or wait before retrying")
        return count

    @_redis_errors
    def wait(
        self,
        run_id: str,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_update: Callable[[RunSnapshot], None] | None = None,
        detail: bool = True,
    ) -> RunSnapshot:
        """Wait until the run is terminal (or ``timeout_s``); ``on_update`` sees each new snapshot.

        Pushed, not polled: it blocks on the run's event stream, which the ledger writes in the same
        atomic step as every state change, so the end of a run is known one round trip after it
        happens. ``poll_s`` only bounds how long one blocking read lasts (then the state is re-read,
        which also notices a run whose keys vanished: ``state_lost``). Without ``on_update``, each
        wake-up is one round trip (the events and then the run's meta, pipelined), and a run this client
        submitted is waited for from its last event at creation, with no status read first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        after = self._created_after(run_id) if on_update is None else None
        if after is not None:  # submitted by this client: it exists, and nothing before `after` matters
            return self._watch(run_id, after, deadline, poll_s, detail)
        snap = self.store.snapshot(run_id, detail=detail)
        if on_update is None:
            return snap if snap.finished else self._watch(run_id, snap.last_event, deadline, poll_s, detail, snap)
        while True:
            if on_update is not None:
                on_update(snap)
            if snap.finished:
                return snap
            block = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if block <= 0:
                return snap
            self._next_change(run_id, snap.last_event, block)
            try:
                snap = self.store.snapshot(run_id, detail=detail)
            except RunNotFound:
                raise RunStateLost(
                    f"run '{run_id}' vanished from Redis while running: Redis restarted without persistence "
                    "or its keys were deleted; the run's state is lost (state_lost)"
                ) from None


    def _watch(
        self, run_id: str, after: str, deadline: float | None, poll_s: float, detail: bool,
        snap: RunSnapshot | None = None,
    ) -> RunSnapshot:  # fmt: skip
        """:meth:`wait` without ``on_update``: one round trip per wake-up (events, then the run's meta, pipelined),
        so the end of a run is known in the round trip that hears of it."""
        while True:
            block = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if block <= 0:
                return snap if snap is not None else self.store.snapshot(run_id, detail=detail)
            events, meta, now = self.store.watch(run_id, after, max(1, int(block * 1000)))
            if not meta:
                raise RunStateLost(
                    f"run '{run_id}' vanished from Redis while running: Redis restarted without persistence "
                    "or its keys were deleted; the run's state is lost (state_lost)"
                )
            if events:
                after = events[-1][0]
            snap = RunSnapshot(run_id, meta, now=now, last_event=after)
            if snap.finished:
                return self.store.snapshot(run_id, detail=True) if detail else snap
            if detail:
                snap = None  # a detailed snapshot is read only when it is returned

    def _created_after(self, run_id: str) -> str | None:
        with self._created_lock:
            return self._created.pop(run_id, None)

    def _remember_created(self, run_id: str, after: str) -> None:
        """The last event of a run this client just created: :meth:`wait` blocks for what follows it at once."""
        with self._created_lock:
            self._created[run_id] = after
            while len(self._created) > CREATED_KEPT:
                del self._created[next(iter(self._created))]

    def _next_change(self, run_id: str, after: str, block_s: float) -> None:
        """Block until the run has new events; then gather more for up to ``COALESCE_S`` unless the run
        ended, so a watcher of a busy run re-reads its state a few times a second, not once per event."""
        events = self.store.events(run_id, after, block_ms=max(1, int(block_s * 1000)))
        until = time.monotonic() + COALESCE_S
        while events and not any(f.get("kind") == "run" and f.get("state") in TERMINAL_RUN_STATES for _, f in events):
            left = until - time.monotonic()
            if left <= 0:
                return
            after = events[-1][0]
            events = self.store.events(run_id, after, block_ms=max(1, int(left * 1000)))


@dataclasses.dataclass
class _Prepared:
    """What submit derives from a pipeline alone, kept for its next submit (see :meth:`Client._prepared`)."""

    specs: tuple[Any, ...]
    plan: ExecutionPlan
    templates: dict[str, str] | None = None
    fps: dict[str, Any] | None = None

    @property
    def fps_reusable(self) -> bool:
        """Fingerprints depend on the pipeline alone unless a task hashes input files (they may change)."""
        return not any(spec.inputs for spec in self.specs)


def _plan_key(pipeline: Pipeline, settings: Settings) -> tuple[Any, ...] | None:
    """What a plan depends on, or None if the params are not plain JSON (then nothing is reused)."""
    try:
        nodes = tuple(
            (n.name, id(n.spec), tuple(n.depends_on), n.map, json.dumps(n.params, sort_keys=True, allow_nan=False))
            for n in pipeline.nodes
        )
    except (TypeError, ValueError):
        return None
    return (pipeline.name, settings.default_queue, settings.max_chain, Limits.from_settings(settings), nodes)


def parse_param_overrides(items: list[str], pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """``["clean.max_error_rate=0.1", "dbconn.db.port=5433"]`` ->
    ``{"clean": {"max_error_rate": 0.1}, "dbconn": {"db": {"port": 5433}}}``.

    A dotted path sets a nested field (merged with the task's other params later, see
    :meth:`Pipeline.with_params`); whether the fields exist is checked by validation.
    Values are parsed as JSON when they can be (numbers, booleans, lists), else kept as strings.
    """
    out: dict[str, dict[str, Any]] = {}
    names = set(pipeline.node_names)
    for item in items:
        key, sep, raw = item.partition("=")
        # task names may hold dots themselves: the longest task name the key starts with wins
        node = max((n for n in names if key.startswith(n + ".")), key=len, default=key.partition(".")[0])
        path = key[len(node) + 1 :].split(".")
        if not sep or not node or not all(path):
            raise ParamOverrideError(f"--param {item!r}: expected TASK.FIELD=VALUE or TASK.FIELD.SUBFIELD=VALUE")
        if node not in names:
            raise ParamOverrideError(f"--param {item!r}: pipeline has no task '{node}'")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = out.setdefault(node, {})
        for depth, part in enumerate(path[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                where = ".".join([node, *path[: depth + 1]])
                raise ParamOverrideError(f"--param {item!r}: '{where}' is already set to a value, not a mapping")
        if isinstance(target.get(path[-1]), dict) and not isinstance(value, dict):
            raise ParamOverrideError(f"--param {item!r}: '{key}' already has nested --param fields")
        target[path[-1]] = value
    return out
