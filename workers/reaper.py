"""The lease reaper: runs inside every worker (no extra daemon), one at a time.

An attempt holds a lease of ``lease_s`` that its process renews while it runs
(:mod:`workers.heartbeat`), so a lease that expires means the attempt's
worker is gone (host down, whole worker SIGKILLed, network cut) or never sent
a heartbeat. Every
``reaper_interval_s`` one worker (a Redis lock decides which) asks the ledger
to requeue such attempts at the front of their queue, or fail them after
``max_worker_lost``, and gives back the messages that silent workers had
reserved but not started (:mod:`workers.liveness`).
"""

from __future__ import annotations

import threading
import uuid

import redis

from orchestrator import keys
from orchestrator.fleet import Fleet
from orchestrator.settings import Settings
from orchestrator.store import RunStore, connect
from workers.liveness import GiveBack
from workers.logs import get_logger
from workers.threads import leave_signals_to_main_thread


class Reaper(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chordflow-reaper", daemon=True)
        self.settings = settings
        self.stop_event = threading.Event()
        self.identity = uuid.uuid4().hex
        self.log = get_logger(component="reaper")

    def run(self) -> None:
        leave_signals_to_main_thread()
        store = RunStore(connect(self.settings.redis_url_value()), self.settings.run_ttl_s)
        give_back = GiveBack(self.settings, Fleet(store.r))
        interval = self.settings.reaper_interval_s
        while not self.stop_event.wait(interval):
            try:
                self.sweep(store, interval, give_back)
            except (redis.RedisError, OSError) as exc:  # Redis restarting: try again next interval
                self.log.warning("reaper.redis_error", error=str(exc))

    def sweep(self, store: RunStore, interval: float, give_back: GiveBack | None = None) -> int:
        # The lock only saves duplicate sweeps (a sweep is idempotent); keep it short so workers with a
        # shorter interval are never starved by one with a longer interval.
        if not store.r.set(keys.REAPER_LOCK, self.identity, nx=True, px=max(int(min(interval, 1.0) * 900), 100)):
            return 0
        reaped = give_back.sweep() if give_back is not None else 0
        for run_id in store.active_runs():
            n = store.reap(run_id, self.settings.max_worker_lost, self.settings.visibility_timeout_s * 1000,
                           lost_ms=int(self.settings.lease_s * 2000))  # fmt: skip
            if n:
                self.log.warning("reaper.requeued", run_id=run_id, attempts=n)
                reaped += n
        return reaped

    def stop(self) -> None:
        self.stop_event.set()
