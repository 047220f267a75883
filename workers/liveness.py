"""Worker liveness: announce this worker, and give back what silent workers held.

A worker's main process announces itself every ``lease_s / 3`` (name, host,
queues, registered tasks, task modules, and the broker delivery tags of the
messages it has reserved or is running) in the registry of
:mod:`orchestrator.fleet`. A message that has been reserved for a whole lease and that no live worker
claims was held by a worker that died: the reaper moves it from kombu's
``unacked`` hash back to the *front* of its queue (kombu's own
``restore_by_tag``), so prefetched work comes back within about a lease instead
of the broker's visibility timeout (an hour by default).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from typing import Any

import redis

from orchestrator import keys
from orchestrator.fleet import Fleet, WorkerInfo
from orchestrator.settings import Settings
from workers.logs import get_logger
from workers.threads import leave_signals_to_main_thread


def held_delivery_tags() -> list[str]:
    """Delivery tags of the messages this worker holds (reserved, waiting for a slot, or running)."""
    from celery.worker import state

    tags: set[str] = set()
    for req in list(state.reserved_requests) + list(state.active_requests):
        message = getattr(req, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag:
            tags.add(str(tag))
    return sorted(tags)


class Announcer(threading.Thread):
    """Keeps this worker's registry entry fresh while it consumes."""

    def __init__(self, settings: Settings, name: str, queues: list[str], tasks: list[str]) -> None:
        super().__init__(name="chordflow-announcer", daemon=True)
        self.settings = settings
        self.info = WorkerInfo(
            instance=f"{name}/{uuid.uuid4().hex[:12]}",
            name=name,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=sorted(queues),
            tasks=sorted(tasks),
            task_modules=list(settings.task_modules),
        )
        self.stop_event = threading.Event()
        self.log = get_logger(component="announcer", worker=name)
        self.fleet: Fleet | None = None

    def run(self) -> None:
        leave_signals_to_main_thread()
        from orchestrator.store import connect

        self.fleet = Fleet(connect(self.settings.redis_url_value()))
        interval = self.settings.lease_s / 3
        while True:
            self.announce_once()
            if self.stop_event.wait(interval):
                return

    def announce_once(self) -> None:
        if self.fleet is None:
            return
        try:
            self.info.tags = held_delivery_tags()
            self.fleet.announce(self.info, self.settings.lease_s)
        except redis.RedisError as exc:  # Redis restarting: the next announcement catches up
            self.log.warning("worker.announce_failed", error=str(exc))
        except Exception as exc:  # never let the announcer die: a silent worker has its work taken back
            self.log.error("worker.announce_error", error=repr(exc))

    def stop(self) -> None:
        """A clean stop leaves the registry (kombu gives unstarted messages back itself)."""
        self.stop_event.set()
        if self.fleet is not None:
            try:
                self.fleet.forget(self.info.instance)
            except redis.RedisError:
                pass


class GiveBack:
    """Moves messages no live worker holds back to the front of their queues (run by the reaper).

    A message sits in kombu's ``unacked`` hash from the moment a worker reserves it until it is
    acked. Every live worker announces the tags it holds at least every ``lease_s / 3``, so a tag
    that has been in ``unacked`` for a whole lease (first seen by Redis time, remembered in
    :data:`orchestrator.keys.UNACKED_SEEN`) and that no live worker claims belongs to a worker that
    died or was cut off: it goes back to the head of its queue. Only chordflow's own tasks on queues
    chordflow workers consume are touched; other Celery apps sharing the Redis are left alone.
    A duplicate this may create (the worker was only slow) is harmless: the ledger runs a node once.
    """

    def __init__(self, settings: Settings, fleet: Fleet) -> None:
        from workers.app import create_app

        self.settings = settings
        self.fleet = fleet
        self.app = create_app(settings)
        self.log = get_logger(component="reaper")

    def sweep(self) -> int:
        """Give back every orphaned message; returns how many were restored."""
        r = self.fleet.r
        live, silent = self.fleet.split()
        for worker in silent:
            self.log.warning("worker.silent", worker=worker.name, held=len(worker.tags))
            self.fleet.forget(worker.instance)
        held = {t for w in live for t in w.tags}
        tasks = {t for w in live for t in w.tasks}
        queues = {q for w in live for q in w.queues}
        tags = set(r.hkeys(keys.KOMBU_UNACKED))
        seen = r.hgetall(keys.UNACKED_SEEN)
        sec, usec = r.time()
        now_ms = sec * 1000 + usec // 1000
        lease_ms = int(self.settings.lease_s * 1000)
        gone = [t for t in seen if t not in tags or t in held]
        new = {t: now_ms for t in tags - held - set(seen)}
        orphans = [t for t, first in seen.items() if t in tags and t not in held and now_ms - int(first) >= lease_ms]
        pipe = r.pipeline(transaction=False)
        if gone:
            pipe.hdel(keys.UNACKED_SEEN, *gone)
        if new:
            pipe.hset(keys.UNACKED_SEEN, mapping=new)
        pipe.execute()
        return self._restore([t for t in orphans if self._ours(t, tasks, queues)])

    def _ours(self, tag: str, tasks: set[str], queues: set[str]) -> bool:
        raw = self.fleet.r.hget(keys.KOMBU_UNACKED, tag)
        try:
            payload, _exchange, routing_key = json.loads(raw or "null")
            return payload["headers"]["task"] in tasks and routing_key in queues
        except (TypeError, ValueError, KeyError):
            return False

    def _restore(self, tags: list[str]) -> int:
        if not tags:
            return 0
        with self.app.connection_for_write() as conn:
            channel: Any = conn.default_channel
            for tag in tags:
                channel.qos.restore_by_tag(tag, leftmost=False)  # RPUSH: the head of the queue
        self.fleet.r.hdel(keys.UNACKED_SEEN, *tags)
        self.log.warning("worker.messages_given_back", count=len(tags), tags=tags[:10])
        return len(tags)
