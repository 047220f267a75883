"""Runs one attempt of one node: claim, inputs, call, record, release.

This is the only place policy turns into execution: the attempt's lease
(``begin``), pydantic validation of config and upstream results, the retry
decision (tenacity, :mod:`workers.retries`), and the write-once settle that
releases the children (``succeed``/``fail``). The Celery task registered for
each pipeline task is a thin adapter around :class:`NodeRunner`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
import typing
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from pydantic import BaseModel, TypeAdapter, ValidationError

from orchestrator import __version__, cache
from orchestrator.artifacts import (
    UnsafePath,
    append_line,
    error_report_path,
    failed_log_path,
    pipeline_of,
    task_dir,
    write_json,
    write_text_atomic,
)
from orchestrator.fingerprint import digest
from orchestrator.map_results import MapResults, split
from orchestrator.redact import Masker
from orchestrator.settings import Settings
from orchestrator.spec import CONFIG_PARAM, CONTEXT_PARAM, PermanentError, TaskSpec
from orchestrator.store import RunStore, connect
from workers import flower_state
from workers.artifact_writer import WRITER
from workers.context import WorkerContext
from workers.heartbeat import Heartbeat
from workers.logs import get_logger, with_masker
from workers.retries import next_wait

TRACEBACK_LINES = 20
MESSAGE_CHARS = 2000  #: an error message is cut here (before it is scanned for secrets)
TRACEBACK_CHARS = 2000  #: each traceback entry likewise
_STORES: dict[int, RunStore] = {}
_HEARTBEATS: dict[int, Heartbeat] = {}


def store_for(settings: Settings) -> RunStore:
    """This process's RunStore (one Redis connection pool per forked process)."""
    pid = os.getpid()
    store = _STORES.get(pid)
    if store is None:
        store = _STORES[pid] = RunStore(connect(settings.redis_url_value()), settings.run_ttl_s)
    return store


def heartbeat_for(settings: Settings) -> Heartbeat:
    pid = os.getpid()
    hb = _HEARTBEATS.get(pid)
    if hb is None:
        hb = _HEARTBEATS[pid] = Heartbeat(store_for(settings), settings.lease_s)
    return hb


class NodeRunner:
    """Executes attempts of nodes that use one task spec."""

    def __init__(self, spec: TaskSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self._adapters = {
            p: TypeAdapter(a)
            for p, a in spec.upstream_params.items()
            if a is not MapResults and typing.get_origin(a) is not MapResults  # validated element by element
        }
        self._result_adapter = (
            None if spec.result_type in (None, Any) or _is_model(spec.result_type) else TypeAdapter(spec.result_type)
        )
        self._lease_ms = int(settings.lease_s * 1000)
        self._retry_cap_s = math.inf  # waits live in the ledger's due index: no broker timeout to stay under
        #: secret paths of the config model at any depth + the task's secret_fields; values come per attempt
        self._masker = Masker.for_model(spec.config_model, spec.secret_fields)

    def __call__(self, celery_task: Any, run_id: str, node: str) -> Any:
        store = store_for(self.settings)
        host = celery_task.request.hostname or socket.gethostname()
        token = uuid.uuid4().hex
        try:
            claim = store.begin(
                run_id, node, host, self._lease_ms, token, celery_task.request.id or "", self.settings.max_worker_lost
            )
        except redis.RedisError as exc:  # nothing was claimed: put the message back rather than ack it
            raise Reject(exc, requeue=True) from exc
        log = get_logger(run_id=run_id, task=node, attempt=claim.attempt, host=host)
        if claim.status != "run":
            # A duplicate or stale message: another live attempt holds the lease ("busy": if its worker
            # dies, the lease expires and the reaper dispatches the node again), or the node is settled,
            # cancelled or not due. Nothing to run, and the rest of its Celery chain must not be published.
            celery_task.request.chain = None
            if claim.status == "busy":
                log.info("task.duplicate_delivery", lease_left_s=round(claim.wait_ms / 1000, 3))
            else:
                log.info("task.skipped", reason=claim.status, state=claim.state)
            return f"skipped: {claim.status} ({claim.state})"  # what Flower shows as its result
        masker = self._masker.with_params(claim.record.get("params") or {}, self.spec.config_model)
        log = with_masker(log, masker)
        ctx = WorkerContext(
            store,
            run_id,
            node,
            claim.attempt,
            self.spec.version,
            self.settings.artifact_root,
            log,
            self.settings.progress_interval_s,
            masker,
            pipeline=pipeline_of(claim.record),
            chunk=_chunk_index(node) if claim.record.get("map") else None,
        )
        ctx.on_progress = flower_state.progress_sender(celery_task, self.settings)
        log.debug("task.started")
        heartbeat = heartbeat_for(self.settings)
        heartbeat.track(run_id, node, token)
        try:
            return self._attempt(celery_task, store, claim, ctx, token, host)
        finally:
            heartbeat.untrack(run_id, node)

    def _attempt(self, celery_task: Any, store: RunStore, claim: Any, ctx: WorkerContext, token: str, host: str) -> Any:
        run_id, node, log = ctx.run_id, ctx.node, ctx.log
        is_chunk = claim.record.get("map") is not None  # one chunk of a map node: "<map>[<i>]"
        started = time.monotonic()
        items, chunk_fp, from_cache = 0, None, False
        try:
            self._check_record(claim.record)
            if is_chunk:
                result_json, items, chunk_fp, from_cache = self._run_chunk(store, claim, ctx)
            else:
                kwargs = self._inputs(claim, ctx, store)
                value = self.spec.fn(**kwargs)
                result_json = self._dump(value)
            feeds = self._feeds(claim.record, result_json)
        except Exception as exc:
            duration = time.monotonic() - started
            error = self._on_error(celery_task, store, claim, ctx, exc, duration, token)
            # Celery (and Flower) see the failure, with secrets scrubbed from its message
            raise TaskFailed(f"{error['type']}: {error['message']}") from None
        duration = time.monotonic() - started
        out = None
        if self.settings.write_artifacts and not is_chunk:  # a chunk's result lives in Redis (and the cache)
            try:
                out = self._write_artifacts(claim, run_id, node, result_json, duration, host, ctx.masker)
            except UnsafePath as exc:
                error = self._on_error(celery_task, store, claim, ctx, PermanentError(str(exc)), duration, token)
                raise TaskFailed(f"{error['type']}: {error['message']}") from None
        heartbeat_for(self.settings).untrack(run_id, node)  # settling now: a renewal racing it is not a lost lease
        line = self._log_line(node, claim.attempt, "cached" if from_cache else "succeeded", duration, host)
        outcome = store.succeed(run_id, node, token, result_json, line, items, feeds)
        flower_state.name_chain_hop(celery_task, store.chain_task_id)
        if outcome != "ok":  # our lease was taken over (we were presumed lost): the result is discarded
            log.warning("task.result_discarded", reason=outcome)
            return f"result discarded: {outcome}"
        else:
            log.info("task.succeeded", duration_s=round(duration, 6))
            if chunk_fp is not None and not from_cache:
                self._remember_chunk(store, claim.record, run_id, node, result_json, items, chunk_fp, log)
            elif not is_chunk:
                self._remember(store, claim.record, run_id, node, result_json, out, log)
        result_type = getattr(self.spec.result_type, "__name__", None)
        return flower_state.result_summary(duration, result_json, None if is_chunk else result_type,
                                           items if is_chunk else None, "cached" if from_cache else "succeeded")

    # -- map nodes (C6) ---------------------------------------------------------------------------

    def _run_chunk(self, store: RunStore, claim: Any, ctx: WorkerContext) -> tuple[str, int, str | None, bool]:
        """Call the task once per element of this chunk; returns (results as a JSON list, items processed,
        the chunk's cache fingerprint, whether the results came from the cache)."""
        record = claim.record
        over = record["map"]["over"]
        raw = claim.parent_results[record["up"].index(over)]
        if raw is None:
            raise PermanentError(f"no elements were recorded for this chunk of the map over '{over}'")
        fp = self._chunk_fp(record, raw)
        if fp is not None and not record.get("fresh"):
            hit = cache.chunk_lookup(store.r, fp)
            if hit is not None:  # the same task, params and elements ran before: reuse (C5, per chunk)
                return hit["result"], int(hit.get("items") or 0), fp, True
        elements = json.loads(raw)
        base = self._inputs(claim, ctx, store, skip=over)
        adapter = self._adapters.get(over)
        passes = over in self.spec.upstream_params or self.spec.takes_upstream_kwargs
        outs, items = [], 0
        for element in elements:
            kwargs = dict(base)
            if passes:
                kwargs[over] = element if adapter is None else _as_permanent(adapter.validate_python, element)
            ctx.reported = None
            outs.append(self._dump(self.spec.fn(**kwargs)))
            items += ctx.reported if ctx.reported is not None else 1
        result = "[" + ",".join(outs) + "]"
        size = len(result) if result.isascii() else len(result.encode("utf-8"))
        if size > self.settings.max_result_bytes:
            raise PermanentError(
                f"this chunk's results are {size} bytes (UTF-8), over max_result_bytes "
                f"({self.settings.max_result_bytes}): use a smaller batch_size, or write large data to ctx.output_dir"
            )
        return result, items, fp, False

    def _chunk_fp(self, record: dict[str, Any], raw: str) -> str | None:
        """A chunk's fingerprint: its map's (task, version, params, inputs; not upstream) and its elements."""
        if not record.get("fp") or not record.get("cache", True):
            return None
        fpp = record.get("fpp") or {}
        parts = {k: v for k, v in fpp.items() if k != "upstream"}
        # the map's other parents reach every chunk: they stay in; what it maps over is the elements' hash
        parts["upstream"] = {p: d for p, d in (fpp.get("upstream") or {}).items() if p != record["map"]["over"]}
        parts["elements"] = _sha256(raw)
        return digest(parts)

    def _remember_chunk(
        self, store: RunStore, record: dict[str, Any], run_id: str, node: str, result: str, items: int, fp: str,
        log: Any,
    ) -> None:  # fmt: skip
        entry = cache.entry_json(run_id, pipeline_of(record), node, self.spec.name, result, None,
                                 store.redis_now(), fp, items=items)  # fmt: skip
        try:
            cache.chunk_record(store.r, fp, entry, record.get("cache_ttl_s"))
        except redis.RedisError as exc:  # a lost entry is a future miss, never a failure
            log.warning("cache.write_failed", error=str(exc))

    def _feeds(self, record: dict[str, Any], result_json: str) -> list[tuple[str, list[str]]]:
        """This result split into the chunks of every map over it (stored by ``succeed`` atomically)."""
        feeds = record.get("feeds")
        if not feeds:
            return []
        value = json.loads(result_json)
        if not isinstance(value, list):
            raise PermanentError(
                f"the result feeds map {', '.join(repr(m) for m in feeds)}: it must be a list (a JSON array), "
                f"got {type(value).__name__}"
            )
        return [(m, split(value, size)) for m, size in feeds.items()]

    def _map_results(self, store: RunStore, run_id: str, parent: str, raw: str) -> Any:
        """A map parent's results: a lazy :class:`MapResults` if the parameter asks for one, else a list."""
        chunks = int(json.loads(raw).get("chunks", 0))
        wanted = self.spec.upstream_params.get(parent, Any)

        def fetch(start: int, stop: int) -> list[tuple[str, str | None, str | None]]:
            return store.chunk_rows(run_id, parent, start, stop)

        if typing.get_origin(wanted) is MapResults or wanted is MapResults:
            args = typing.get_args(wanted)
            element = TypeAdapter(args[0]).validate_python if args and args[0] is not Any else None
            return MapResults(parent, chunks, fetch, None if element is None else _permanent(element))
        values = list(MapResults(parent, chunks, fetch))
        if wanted is Any or parent not in self.spec.upstream_params:
            return values
        return _as_permanent(TypeAdapter(wanted).validate_python, values)

    def _remember(
        self, store: RunStore, record: dict[str, Any], run_id: str, node: str, result: str, out: Path | None, log: Any
    ) -> None:
        """C5: index the result by its fingerprint; after the artifacts (same writer thread, in order),
        so an entry never points at a directory still being written."""
        if not record.get("fp") or not record.get("cache", True):
            return
        entry = cache.entry_json(run_id, pipeline_of(record), node, self.spec.name, result,
                                 None if out is None else str(out), store.redis_now(), record["fp"])  # fmt: skip
        # the parts explain a later miss ("which param changed"); they are masked like metadata.json
        last = json.dumps({"fp": record["fp"], "parts": self._masker.data(record.get("fpp") or {}), "run_id": run_id})

        def write() -> None:
            try:
                cache.record(store.r, record, entry, record.get("cache_ttl_s"), last)
            except redis.RedisError as exc:  # a lost entry is a future miss, never a failure
                log.warning("cache.write_failed", error=str(exc))

        WRITER.submit(write) if out is not None else write()

    # -- inputs and outputs ---------------------------------------------------------------------

    def _check_record(self, record: dict[str, Any]) -> None:
        """A node record naming another task (forged in Redis, or a stale message) must not run under this one."""
        if record.get("task") != self.spec.name:
            raise PermanentError(
                f"node record names task {str(record.get('task'))[:200]!r} but the message ran {self.spec.name!r}: "
                "refused (a record that does not match its Celery task is not trusted)"
            )

    def _inputs(self, claim: Any, ctx: WorkerContext, store: RunStore, skip: str | None = None) -> dict[str, Any]:
        spec, record = self.spec, claim.record
        kwargs: dict[str, Any] = {}
        if spec.config_model is not None:
            kwargs[CONFIG_PARAM] = _as_permanent(spec.config_model.model_validate, record.get("params") or {})
        mapped = set(record.get("mapped_up") or ())
        for parent, raw in zip(record["up"], claim.parent_results, strict=True):
            if parent == skip:
                continue
            if parent in mapped and (parent in spec.upstream_params or spec.takes_upstream_kwargs):
                # a map that never ran (its input failed; this task is `always`) gives None
                kwargs[parent] = None if raw is None else self._map_results(store, ctx.run_id, parent, raw)
            elif parent in self._adapters:
                kwargs[parent] = None if raw is None else _as_permanent(self._adapters[parent].validate_json, raw)
            elif spec.takes_upstream_kwargs:
                kwargs[parent] = None if raw is None else json.loads(raw)
        if spec.wants_context:
            kwargs[CONTEXT_PARAM] = ctx
        return kwargs

    def _dump(self, value: Any) -> str:
        """The result as JSON; refused (permanently) if it is not valid JSON or over ``max_result_bytes``."""
        try:
            if isinstance(value, BaseModel):
                text = value.model_dump_json()  # pydantic writes NaN/Infinity as null: look for them below
                python = value.model_dump if "null" in text else None
            elif self._result_adapter is not None:
                text = self._result_adapter.dump_json(value).decode()
                python = (lambda: self._result_adapter.dump_python(value)) if "null" in text else None  # type: ignore[union-attr]
            else:
                text, python = json.dumps(value, allow_nan=False), None
            if python is not None and _has_non_finite(python()):
                raise ValueError("Out of range float values are not JSON compliant")
        except (TypeError, ValueError) as exc:
            if "Out of range float" in str(exc):
                raise PermanentError("result contains NaN or Infinity, which JSON cannot represent") from None
            raise PermanentError(f"result is not JSON-serialisable: {exc}") from exc
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        if size > self.settings.max_result_bytes:
            raise PermanentError(
                f"result is {size} bytes (UTF-8), over max_result_bytes ({self.settings.max_result_bytes}): "
                "write large data to ctx.output_dir and return its path"
            )
        return text

    # -- failures -------------------------------------------------------------------------------

    def _on_error(
        self,
        celery_task: Any,
        store: RunStore,
        claim: Any,
        ctx: WorkerContext,
        exc: Exception,
        duration: float,
        token: str,
    ) -> dict[str, Any]:
        """Record a failed attempt: retry (raises Celery's Retry) or fail; returns the scrubbed error."""
        run_id, node, attempt = ctx.run_id, ctx.node, claim.attempt
        host = celery_task.request.hostname or socket.gethostname()
        heartbeat_for(self.settings).untrack(run_id, node)  # settling now (see _attempt)
        reason = "timeout" if isinstance(exc, SoftTimeLimitExceeded) else "exception"
        mask = ctx.masker.text  # bounded: a 1 MB message costs what a 2 kB one does
        error = {
            "type": type(exc).__name__,
            "message": mask(_safe_str(exc), MESSAGE_CHARS),
            "reason": reason,
            "attempt": attempt,
            "traceback": [mask(line, TRACEBACK_CHARS) for line in traceback.format_exception(exc)[-TRACEBACK_LINES:]],
        }
        wait_s = next_wait(self.spec.retry, attempt, exc, self._retry_cap_s)
        line = self._log_line(node, attempt, "retrying" if wait_s is not None else "failed", duration, host, error)
        if wait_s is not None:
            if store.defer(run_id, node, token, json.dumps(error), line, wait_s) != "ok":
                return error  # no longer ours: another attempt owns the node
            ctx.log.warning("task.retrying", error=error["type"], message=error["message"], wait_s=round(wait_s, 3))
            # The next attempt is due in the ledger (Redis time); this message is done. Celery and Flower
            # see RETRY with the scrubbed error; no new message is published here.
            raise Retry(exc=TaskFailed(f"{error['type']}: {error['message']}"), when=round(wait_s, 3)) from None
        # The report is on disk before the ledger says "failed": whoever is told the run ended finds it.
        self._write_error_report(claim, ctx, error, host)
        if store.fail(run_id, node, token, json.dumps(error), line) != "ok":
            return error
        ctx.log.error("task.failed", error=error["type"], message=error["message"], reason=reason)
        return error

    def _write_error_report(self, claim: Any, ctx: WorkerContext, error: dict[str, Any], host: str) -> None:
        root = self.settings.artifact_root
        report = {
            "run_id": ctx.run_id,
            "task": ctx.node,
            "task_name": self.spec.name,
            "attempt": claim.attempt,
            "host": host,
            "at": _redis_time_iso(store_for(self.settings)),
            "error": error,
            "input_sample": {
                "params": ctx.masker.data(claim.record.get("params") or {}),
                "upstream": ctx.masker.data(dict(zip(claim.record["up"], claim.parent_results, strict=True))),
            },
        }
        try:
            write_json(error_report_path(root, ctx.run_id, ctx.node, claim.attempt), report)
            summary = {k: report[k] for k in ("run_id", "task", "attempt", "host", "at")}
            summary.update(error=error["type"], message=error["message"][:300])
            append_line(failed_log_path(root), json.dumps(summary))
        except (OSError, UnsafePath) as exc:  # a full disk must not hide the task failure itself
            ctx.log.error("report.write_failed", error=str(exc))

    def on_lost(self, run_id: str, node: str, task_id: str, host: str, reason: str, message: str) -> str:
        """Called in the worker's main process when an attempt died without settling.

        ``worker_lost``: the pool process died; Celery requeues the message, the ledger counts it and
        fails the node after ``max_worker_lost``. ``timeout``: the hard limit killed it; retried per
        policy, else failed with reason ``timeout``.
        """
        store = store_for(self.settings)
        error = {"type": "TimeLimitExceeded" if reason == "timeout" else "WorkerLostError", "message": message,
                 "reason": reason, "traceback": []}  # fmt: skip
        attempt = 0
        retry_wait_s = None
        if reason == "timeout":
            attempt = store.attempts(run_id, node)
            retry_wait_s = next_wait(self.spec.retry, attempt, TimeoutError(message), self._retry_cap_s)
        line = json.dumps({"task": node, "attempt": attempt, "outcome": reason, "host": host,
                           "error": error["type"], "message": message[:300]})  # fmt: skip
        outcome = store.lost(
            run_id, node, task_id, reason, json.dumps(error), line, self.settings.max_worker_lost, retry_wait_s
        )
        get_logger(run_id=run_id, task=node, host=host).warning("task.lost", reason=reason, outcome=outcome)
        return outcome

    # -- records --------------------------------------------------------------------------------

    def _write_artifacts(
        self, claim: Any, run_id: str, node: str, result_json: str, duration: float, host: str, masker: Masker
    ) -> Path:
        """Check the artifact path now (raises UnsafePath); write the two files in the writer thread.
        Returns the directory (resolved once: the cache entry points at it)."""
        out = task_dir(self.settings.artifact_root, pipeline_of(claim.record), node, self.spec.version, run_id)

        def write() -> None:
            os.makedirs(out, exist_ok=True)
            write_text_atomic(out / "result.json", result_json)
            # written last and atomically: its presence means the directory is complete
            write_text_atomic(out / "metadata.json", json.dumps(metadata()))

        def metadata() -> dict[str, Any]:  # built in the writer thread too: masking and hashing are off the path
            return {
                "run_id": run_id,
                "task": node,
                "task_name": self.spec.name,
                "version": self.spec.version,
                "params": masker.data(claim.record.get("params") or {}),
                "inputs": {
                    p: (None if r is None else _sha256(r))
                    for p, r in zip(claim.record["up"], claim.parent_results, strict=True)
                },
                "duration_s": round(duration, 6),
                "status": "succeeded",
                "pipeline": pipeline_of(claim.record),
                "fingerprint": claim.record.get("fp"),
                "fingerprint_parts": masker.data(claim.record.get("fpp") or {}),
                "attempt": claim.attempt,
                "host": host,
                "chordflow_version": __version__,
            }

        WRITER.submit(write)
        return out

    def _log_line(
        self, node: str, attempt: int, outcome: str, duration: float, host: str, error: dict[str, Any] | None = None
    ) -> str:
        line: dict[str, Any] = {
            "task": node,
            "attempt": attempt,
            "outcome": outcome,
            "duration_s": round(duration, 6),
            "host": host,
        }  # the ledger adds "at" (Redis time)
        if error is not None:
            line.update(error=error["type"], message=error["message"][:300])
        return json.dumps(line)



def _redis_time_iso(store: RunStore) -> str:
    """Now by Redis TIME (every host agrees), ISO 8601 UTC; the local clock only if Redis is away."""
    try:
        return datetime.fromtimestamp(store.now(), UTC).isoformat()
    except redis.RedisError:
        return datetime.now(UTC).isoformat()


class TaskFailed(Exception):
    """What Celery sees when a task fails or retries: the original type and a scrubbed message.

    Raised ``from None`` (or passed to ``retry``) so that the original exception, whose message may
    hold secrets, never reaches Celery's logs, events, Flower or the result backend.
    """


def _safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception's own ``__str__`` raises (the failure must still settle)."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def _has_non_finite(value: Any) -> bool:
    """Whether a JSON-like value holds a NaN or infinite float (iterative: no recursion limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return False


def _chunk_index(node: str) -> int:
    return int(node[node.rindex("[") + 1 : -1])


def _permanent(fn: Any) -> Any:
    return lambda value: _as_permanent(fn, value)


def _as_permanent(fn: Any, value: Any) -> Any:
    """Validation of stored inputs cannot get better by retrying."""
    try:
        return fn(value)
    except ValidationError as exc:
        raise PermanentError(f"input validation failed: {exc}") from exc


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
