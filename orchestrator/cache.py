"""C5: the cache index in Redis, and the submit-time decision of which nodes are ``cached``.

An entry (``keys.cache_entry(fp)``) holds the result JSON itself and the artifact directory
of the run that computed it, so it outlives that run's keys; it is written by the worker once
the node has succeeded and expires after the task's ``cache_ttl_s``. An entry whose artifact
directory is gone is a miss (the result may point into it), never a broken run.

Decisions are made in bulk at submit: one MGET for every entry and every "last fingerprint"
pointer. A node is cached only if its entry is live *and* every parent is cached: a node that
runs makes all its descendants run (``--force-task``, ``cache=False``, a changed ancestor).
"""

from __future__ import annotations

import json
import os
import secrets
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from orchestrator import keys
from orchestrator.fingerprint import Fingerprint, explain
from orchestrator.plan import ExecutionPlan
from orchestrator.spec import TaskSpec


@dataclass
class Decision:
    """What submit does with one node: ``run``, ``cached`` (from ``source_run``) or ``blocked``."""

    action: str
    reasons: list[str] = field(default_factory=list)
    source_run: str | None = None
    result: str | None = None  #: the reused result JSON (cached only)
    artifacts: str | None = None


def lookup(r: redis.Redis, pipeline: str, fps: Mapping[str, Fingerprint]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Entries by node and last-recorded pointers by node: one round trip (a single MGET)."""
    nodes = list(fps)
    if not nodes:
        return {}, {}
    raw = r.mget([keys.cache_entry(fps[n].digest) for n in nodes] + [keys.cache_last(pipeline, n) for n in nodes])
    entries = {n: json.loads(v) for n, v in zip(nodes, raw[: len(nodes)], strict=True) if v}
    last = {n: json.loads(v) for n, v in zip(nodes, raw[len(nodes) :], strict=True) if v}
    return entries, last


def decide(
    plan: ExecutionPlan,
    specs: Mapping[str, TaskSpec],
    fps: Mapping[str, Fingerprint],
    entries: Mapping[str, Any],
    last: Mapping[str, Any],
    forced: Iterable[str] = (),
    force_all: bool = False,
) -> dict[str, Decision]:
    """Per node, parents first: cached if its entry is live, its artifacts exist and every parent is cached."""
    forced = set(forced)
    out: dict[str, Decision] = {}
    for name in plan.order:
        node, spec = plan.nodes[name], specs[name]
        entry = entries.get(name)
        reasons: list[str] = []
        if force_all:
            reasons.append("forced (--force)")
        elif name in forced:
            reasons.append("forced")
        elif not spec.cache:
            reasons.append("task is not cacheable (cache=False)")
        elif node.map is not None:
            reasons.append("map: each chunk is looked up in the cache by its own elements when it runs")
        running_parents = [p for p in node.parents if out[p].action != "cached"]
        if not reasons and entry is not None and not running_parents and _artifacts_exist(entry):
            out[name] = Decision("cached", source_run=entry.get("run_id"), result=entry.get("result"),
                                 artifacts=entry.get("artifacts"))  # fmt: skip
            continue
        if not reasons:
            if entry is not None and not _artifacts_exist(entry):
                reasons.append(f"cached artifacts of run {entry.get('run_id')} are gone")
            elif entry is not None:
                reasons.append("upstream " + ", ".join(f"'{p}'" for p in running_parents) + " will run")
            else:
                prev = last.get(name)
                why = explain(fps[name].parts, prev.get("parts") if prev else None)
                reasons += why or ["cache entry expired or was cleared"]
            if entry is None and running_parents and not any(r.startswith("upstream") for r in reasons):
                reasons.append("upstream " + ", ".join(f"'{p}'" for p in running_parents) + " will run")
        out[name] = Decision("run", reasons)
    return out


def _artifacts_exist(entry: Mapping[str, Any]) -> bool:
    path = entry.get("artifacts")
    return path is None or os.path.isfile(os.path.join(path, "metadata.json"))


def entry_json(
    run_id: str, pipeline: str, node: str, task: str, result_json: str, artifacts: str | None, now: float, fp: str,
    **extra: Any,
) -> str:  # fmt: skip
    return json.dumps({"run_id": run_id, "pipeline": pipeline, "node": node, "task": task, "fp": fp,
                       "result": result_json, "artifacts": artifacts, "created_at": now, **extra})  # fmt: skip


def chunk_lookup(r: redis.Redis, fp: str) -> dict[str, Any] | None:
    """The entry of one map chunk (same task, params and elements ran before), or None."""
    raw = r.get(keys.cache_entry(fp))
    return json.loads(raw) if raw else None


def chunk_record(r: redis.Redis, fp: str, entry: str, ttl_s: int | None) -> None:
    """A chunk's entry (no "last fingerprint" pointer: a map has one per chunk, and --dry-run explains maps
    as a whole)."""
    r.set(keys.cache_entry(fp), entry, ex=ttl_s)


def record(r: redis.Redis, record: Mapping[str, Any], entry: str, ttl_s: int | None, last: str) -> None:
    """Write the entry and the node's last-fingerprint pointer (one round trip)."""
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.cache_entry(record["fp"]), entry, ex=ttl_s)
    pipe.set(keys.cache_last(record["pipeline"], record["node"]), last)
    pipe.execute()


def scan(r: redis.Redis, task: str | None = None) -> list[dict[str, Any]]:
    """Every live entry (optionally of one task or node name), with its fingerprint and TTL."""
    found = list(r.scan_iter(match=keys.CACHE_PREFIX + "*", count=1000))
    out = []
    for start in range(0, len(found), 500):
        batch = found[start : start + 500]
        pipe = r.pipeline(transaction=False)
        for k in batch:
            pipe.get(k)
            pipe.ttl(k)
        vals = pipe.execute()
        for k, raw, ttl in zip(batch, vals[::2], vals[1::2], strict=True):
            if not raw:
                continue
            e = json.loads(raw)
            if task is None or task in (e.get("task"), e.get("node")):
                e.update(key=k, fp=k[len(keys.CACHE_PREFIX) :], ttl_s=ttl)
                out.append(e)
    return sorted(out, key=lambda e: (e.get("pipeline") or "", e.get("node") or "", -(e.get("created_at") or 0)))


def clear(r: redis.Redis, task: str | None = None) -> int:
    """Delete entries (all, or one task's); returns how many."""
    doomed = [e["key"] for e in scan(r, task)]
    for start in range(0, len(doomed), 1000):
        r.delete(*doomed[start : start + 1000])
    return len(doomed)


@dataclass
class CachePlan:
    """Everything submit needs from the cache: fingerprints, per-node decisions, record fields."""

    fps: dict[str, Fingerprint]
    decisions: dict[str, Decision]
    pipeline: str

    @property
    def cached(self) -> list[tuple[str, str, str]]:
        """(node, result JSON, source run) of every node settled as ``cached`` at submit."""
        return [(n, d.result or "null", d.source_run or "") for n, d in self.decisions.items() if d.action == "cached"]

    def record_fields(self, specs: Mapping[str, TaskSpec], record: bool = True) -> dict[str, dict[str, Any]]:
        """What the worker needs to write the entry and ``metadata.json``: fingerprint, parts, policy.

        ``record=False`` (the ``use_cache`` setting off): workers write no cache entry either, so a
        deployment without caching pays nothing for it (one Redis round trip per task).
        """
        out = {
            n: {"pipeline": self.pipeline, "node": n, "fp": fp.digest, "fpp": fp.parts,
                "cache": specs[n].cache and record, "cache_ttl_s": specs[n].cache_ttl_s}
            for n, fp in self.fps.items()
        }  # fmt: skip
        for n, d in self.decisions.items():  # --force / --force-task: a map's chunks run, not looked up
            if n in out and any(r.startswith("forced") for r in d.reasons):
                out[n]["fresh"] = True
        return out


def descendants(plan: ExecutionPlan, names: Iterable[str]) -> set[str]:
    """``names`` (node or task names) and every node below them; unknown names are an error."""
    from orchestrator.errors import ChordflowError

    start: set[str] = set()
    for name in names:
        hit = {n for n, p in plan.nodes.items() if name in (n, p.task)}
        if not hit:
            raise ChordflowError(f"pipeline '{plan.pipeline}' has no task or node named '{name}'")
        start |= hit
    out, stack = set(), list(start)
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack.extend(plan.nodes[n].children)
    return out


def resume_source(r: redis.Redis, plan: ExecutionPlan, needed: list[str], from_run: str | None) -> dict[str, str]:
    """Results of ``needed`` nodes from ``from_run``, else from the latest finished run of the pipeline
    that has them all. Raises :class:`ChordflowError` (clear message) if a needed result does not exist."""
    from orchestrator.errors import ChordflowError
    from orchestrator.store import check_run_id

    candidates = [check_run_id(from_run)] if from_run else r.zrevrange(keys.RUNS_INDEX, 0, 199)
    pipe = r.pipeline(transaction=False)
    for rid in candidates:
        pipe.hmget(keys.run_keys(rid).meta, ["pipeline", "state"])
        pipe.hmget(keys.run_keys(rid).results, needed) if needed else pipe.echo("")
    replies = pipe.execute()
    for rid, (pipeline, state), results in zip(candidates, replies[::2], replies[1::2], strict=True):
        if from_run and pipeline is None:
            raise ChordflowError(f"--from-run {rid}: no such run (unknown id, or its keys expired)")
        if pipeline != plan.pipeline or state not in ("succeeded", "failed", "cancelled"):
            if from_run:
                raise ChordflowError(f"--from-run {rid}: a run of '{pipeline}' in state {state}, not a finished "
                                     f"run of '{plan.pipeline}'")  # fmt: skip
            continue
        missing = [n for n, v in zip(needed, results or [], strict=False) if v is None] if needed else []
        if not missing:
            out = dict(zip(needed, results or [], strict=False)) if needed else {}
            out["__run__"] = rid
            return out
        if from_run:
            raise ChordflowError(f"--resume-from: run {rid} has no result for {', '.join(missing[:10])} "
                                 "(they did not succeed there); resume from an earlier task")  # fmt: skip
    raise ChordflowError(f"--resume-from: no finished run of '{plan.pipeline}' has results for every task "
                         "outside the resumed part; run it in full first")  # fmt: skip


_SECRET_KEYS: weakref.WeakKeyDictionary[redis.Redis, bytes] = weakref.WeakKeyDictionary()


def secret_key(r: redis.Redis) -> bytes:
    """The key secret params are HMACed with in fingerprints: random, made once per Redis, never shown.
    Read once per client (it never changes): a submit costs no round trip for it."""
    known = _SECRET_KEYS.get(r)
    if known is not None:
        return known
    key = r.get(keys.CACHE_SECRET_KEY)
    if key is None:
        r.set(keys.CACHE_SECRET_KEY, secrets.token_hex(32), nx=True)
        key = r.get(keys.CACHE_SECRET_KEY)
    out = key.encode() if isinstance(key, str) else bytes(key or b"")
    if out:
        _SECRET_KEYS[r] = out
    return out


def prepare(
    r: redis.Redis | None,
    pipeline: Any,
    plan: ExecutionPlan,
    hasher: Any,
    use_cache: bool = True,
    force: bool = False,
    force_tasks: Iterable[str] = (),
    resume_from: str | None = None,
    from_run: str | None = None,
    fps: dict[str, Fingerprint] | None = None,
) -> CachePlan:
    """Fingerprint every node (unless ``fps`` are given: computed before for this very pipeline) and decide
    which are cached (one MGET; a resume reads one more run)."""
    from orchestrator.fingerprint import fingerprint_plan

    specs = {n.name: n.spec for n in pipeline.nodes}
    if fps is None:
        fps = fingerprint_plan(pipeline, plan, hasher, secret_key(r) if r is not None else b"")
    forced = descendants(plan, force_tasks) if force_tasks else set()
    if resume_from:
        rerun = descendants(plan, [resume_from])
        needed = [n for n in plan.order if n not in rerun]
        assert r is not None
        found = resume_source(r, plan, needed, from_run)
        src = found.pop("__run__")
        decisions = {
            n: Decision("cached", source_run=src, result=found[n]) if n in found
            else Decision("run", [f"resumed from '{resume_from}'"])
            for n in plan.order
        }  # fmt: skip
        return CachePlan(fps, decisions, plan.pipeline)
    if r is None or not use_cache:
        entries: dict[str, Any] = {}
        last: dict[str, Any] = {}
        force = force or not use_cache
    else:
        entries, last = lookup(r, plan.pipeline, fps)
    return CachePlan(fps, decide(plan, specs, fps, entries, last, forced, force), plan.pipeline)
