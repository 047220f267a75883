"""The worker registry: who is alive, which queues they consume, which tasks they know.

Every worker announces itself every ``lease_s / 3`` (:mod:`workers.liveness`):
its name, host, queues, registered chordflow tasks, task modules and the broker
delivery tags of the messages it holds (reserved or running). Liveness is
judged by Redis ``TIME`` only. Clients use the registry to say *before* and
*while* a run waits that no live worker can take some of its work; the reaper
uses it to give back the messages a vanished worker was holding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from orchestrator import keys

_ANNOUNCE_LUA = """
-- announce(instance, record_json, ttl_ms): store the record; it is live until now + ttl_ms (Redis time)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return now
"""

_LIVE_LUA = """
-- split(): instances whose announcement has not expired (live) and the others (silent), by Redis time
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf'), redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)}
"""


@dataclass
class WorkerInfo:
    """One worker's announcement."""

    instance: str  #: registry member: unique per worker process start (a restarted "w1" is a new instance)
    name: str = ""
    host: str = ""
    pid: int = 0
    queues: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    task_modules: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  #: broker delivery tags it holds

    @classmethod
    def from_json(cls, instance: str, raw: str | None) -> WorkerInfo:
        data: dict[str, Any] = json.loads(raw) if raw else {}
        known = {k: data[k] for k in ("name", "host", "pid", "queues", "tasks", "task_modules", "tags") if k in data}
        return cls(instance=instance, **known)

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "host": self.host, "pid": self.pid, "queues": self.queues, "tasks": self.tasks,
             "task_modules": self.task_modules, "tags": self.tags}  # fmt: skip
        )


class Fleet:
    """Reads and writes of the worker registry."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._announce = client.register_script(_ANNOUNCE_LUA)
        self._split = client.register_script(_LIVE_LUA)

    def announce(self, info: WorkerInfo, ttl_s: float) -> None:
        """Live for ``ttl_s`` from now (each worker's own lease: a fleet with mixed settings stays right)."""
        self._announce(keys=[keys.WORKERS, keys.WORKERS_SEEN], args=[info.instance, info.to_json(), int(ttl_s * 1000)])

    def forget(self, instance: str) -> None:
        """A worker that stops cleanly leaves the registry (its unstarted messages go back by kombu)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(keys.WORKERS, instance)
        pipe.zrem(keys.WORKERS_SEEN, instance)
        pipe.execute()

    def split(self) -> tuple[list[WorkerInfo], list[WorkerInfo]]:
        """(live, silent) workers: silent ones let their announcement expire (Redis time)."""
        live, silent = self._split(keys=[keys.WORKERS_SEEN])
        names = list(live) + list(silent)
        records = self.r.hmget(keys.WORKERS, names) if names else []
        infos = [WorkerInfo.from_json(n, raw) for n, raw in zip(names, records, strict=True)]
        return infos[: len(live)], infos[len(live) :]

    def live(self) -> list[WorkerInfo]:
        return self.split()[0]


def unroutable(needs: set[tuple[str, str]], live: list[WorkerInfo]) -> list[str]:
    """Why some (task, queue) pairs cannot run now: no live worker consumes the queue or knows the task."""
    problems: list[str] = []
    by_queue: dict[str, list[WorkerInfo]] = {}
    for w in live:
        for q in w.queues:
            by_queue.setdefault(q, []).append(w)
    for task, queue in sorted(needs):
        consumers = by_queue.get(queue, [])
        if not consumers:
            problems.append(f"no live worker consumes queue '{queue}' (needed by task '{task}')")
        elif not any(task in w.tasks for w in consumers):
            modules = sorted({m for w in consumers for m in w.task_modules})
            problems.append(
                f"no live worker on queue '{queue}' has task '{task}' registered (workers: "
                f"{', '.join(w.name for w in consumers)}; their task modules: {', '.join(modules) or '-'}); "
                "is its module under the workers' task modules, in a package with __init__.py, and were the "
                "workers restarted after the code changed?"
            )
    return problems
