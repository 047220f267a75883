"""The due-time scheduler: wakes retries whose backoff ended, by Redis time.

A failed attempt that will be retried is not a Celery ETA message held in one
worker's memory (lost if that worker dies, timed by that host's clock): the
ledger puts the node in the global ``due`` index with a Redis-time score and
publishes on ``chordflow:wake``. Every worker runs this thread; it sleeps
until the earliest due time (measured as a Redis-time difference, then waited
on the monotonic clock) or until a wake-up message arrives, and asks the
ledger to publish due nodes at the front of their queues. ``wake`` is atomic,
so many schedulers wake a node once.
"""

from __future__ import annotations

import threading

import redis

from orchestrator import keys
from orchestrator.settings import Settings
from orchestrator.store import RunStore, connect
from workers.logs import get_logger
from workers.threads import leave_signals_to_main_thread

MAX_SLEEP_S = 1.0  #: look again at least this often (a missed wake-up costs at most this)


class DueScheduler(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chordflow-scheduler", daemon=True)
        self.settings = settings
        self.stop_event = threading.Event()
        self.log = get_logger(component="scheduler")

    def run(self) -> None:
        leave_signals_to_main_thread()
        store = RunStore(connect(self.settings.redis_url_value()), self.settings.run_ttl_s)
        pubsub = None
        while not self.stop_event.is_set():
            try:
                if pubsub is None:
                    pubsub = store.r.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(keys.WAKE_CHANNEL)
                wait = self.wake_due(store)
                pubsub.get_message(timeout=wait)  # returns early when a retry is scheduled anywhere
            except redis.RedisError as exc:  # Redis restarting: start over after a pause
                self.log.warning("scheduler.redis_error", error=str(exc))
                pubsub = None
                self.stop_event.wait(MAX_SLEEP_S)

    def wake_due(self, store: RunStore) -> float:
        """Publish every due node; returns how long to sleep before the next one."""
        while True:
            due, next_s = store.due()
            for run_id, node in due:
                outcome = store.wake(run_id, node)
                if outcome == "ok":
                    self.log.debug("task.retry_due", run_id=run_id, task=node)
            if not due:
                return MAX_SLEEP_S if next_s is None else min(max(next_s, 0.001), MAX_SLEEP_S)

    def stop(self) -> None:
        self.stop_event.set()
