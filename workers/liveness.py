"""Worker liveness: announce this worker, and give back what silent workers held.

A worker's main process announces itself every ``lease_s / 3`` (name, host,
queues, registered tasks, task modules, and the broker delivery tags of the
messages it has reserved or is running) in the registry of
:mod:`orchestrator.fleet`. A worker that has not announced for ``lease_s`` (by
Redis ``TIME``) is gone: the reaper moves the messages it held from kombu's
``unacked`` hash back to the *front* of their queues (kombu's own
``restore_by_tag``), so prefetched work comes back within about a lease instead
of the broker's visibility timeout (an hour by default).
"""

from __future__ import annotations

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
            self.fleet.announce(self.info)
        except redis.RedisError as exc:  # Redis restarting: the next announcement catches up
            self.log.warning("worker.announce_failed", error=str(exc))

    def stop(self) -> None:
        """A clean stop leaves the registry (kombu gives unstarted messages back itself)."""
        self.stop_event.set()
        if self.fleet is not None:
            try:
                self.fleet.forget(self.info.instance)
            except redis.RedisError:
                pass


class GiveBack:
    """Moves the messages a silent worker held back to the front of their queues (in the reaper)."""

    def __init__(self, settings: Settings, fleet: Fleet) -> None:
        from workers.app import create_app

        self.settings = settings
        self.fleet = fleet
        self.app = create_app(settings)
        self.log = get_logger(component="reaper")

    def sweep(self) -> int:
        """Give back every silent worker's messages; returns how many were restored."""
        _, silent = self.fleet.split(self.settings.lease_s)
        restored = 0
        for worker in silent:
            restored += self._give_back(worker)
            self.fleet.forget(worker.instance)
        return restored

    def _give_back(self, worker: WorkerInfo) -> int:
        if not worker.tags:
            self.log.warning("worker.silent", worker=worker.name, held=0)
            return 0
        n = 0
        with self.app.connection_for_write() as conn:
            channel: Any = conn.default_channel
            for tag in worker.tags:
                if self.fleet.r.hexists(keys.KOMBU_UNACKED, tag):
                    channel.qos.restore_by_tag(tag, leftmost=False)  # RPUSH: the head of the queue
                    n += 1
        self.log.warning("worker.silent", worker=worker.name, held=len(worker.tags), given_back=n)
        return n
