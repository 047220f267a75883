"""The alert checker: a thread in each worker configured with ``[alerts]`` targets.

Every ``alerts.interval_s`` each such worker tells the ledger (fields of :data:`keys.METRICS`, valid
for a few intervals by Redis time) which conditions to feed: ``failed_on`` (the ledger enqueues a
``run_failed`` alert when a run ends failed) and ``slow_on`` (the ledger adds each successful attempt's
duration to :data:`keys.SETTLED`). Then one of them (a Redis lock decides which) checks:

* slow tasks, from the new entries of the settled stream against each task's window of recent
  durations (kept in :data:`keys.ALERT_STATE`, so whichever worker checks next goes on where it left);
* queues with messages and no live consumer (first seen by Redis time, also kept there);
* the failure rate over the window, from totals sampled each interval (:data:`keys.ALERT_SAMPLES`).

An alert that fires is deduplicated (``SET NX`` on :func:`keys.alert_once` for ``repeat_s``), stored
(:func:`keys.alert_record`) and put in the notification outbox as ``alert:<id>``; the notifier
(:mod:`workers.notifier`) delivers it like a run end: signed webhook, e-mail, retries, recorded attempts.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator import alerts, keys, metrics
from orchestrator.fleet import Fleet
from orchestrator.notify import Target, build_payload, idempotency_key
from orchestrator.registry import Registry
from orchestrator.settings import Settings
from orchestrator.states import TERMINAL_RUN_STATES
from orchestrator.store import connect
from workers.logs import get_logger
from workers.threads import leave_signals_to_main_thread

FLAG_INTERVALS = 3  #: the ledger feeds a condition this many check intervals (at least 10 s) after the last refresh
READ_BATCH = 5000  #: settled attempts read per check
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
PUBLISHED_QUEUES_S = 60.0  #: how often the queues of published pipelines are read again


def now_ms(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def fire(r: redis.Redis, kind: str, subject: str, summary: str, details: dict[str, Any], cfg: alerts.AlertConfig,
         ttl_s: int) -> str | None:  # fmt: skip
    """Enqueue an alert unless the same kind and subject fired within ``repeat_s``; returns its id."""
    if cfg.repeat_s > 0 and not r.set(keys.alert_once(kind, subject), "1", nx=True, px=int(cfg.repeat_s * 1000)):
        return None
    at = now_ms(r)
    alert_id = f"{kind}:{uuid.uuid4().hex[:16]}"
    record = {"id": alert_id, "kind": kind, "summary": summary, "details": details, "at": at / 1000}
    pipe = r.pipeline(transaction=True)
    pipe.set(keys.alert_record(alert_id), json.dumps(record), ex=ttl_s)
    pipe.zadd(keys.NOTIFY, {keys.ALERT_MEMBER + alert_id: at})
    pipe.hincrby(keys.METRICS, f"alert|{kind}", 1)
    pipe.publish(keys.NOTIFY_CHANNEL, keys.ALERT_MEMBER + alert_id)
    pipe.execute()
    get_logger(component="alerts").warning("alert.fired", kind=kind, subject=subject, summary=summary)
    return alert_id


class AlertChecker(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chordflow-alerts", daemon=True)
        self.settings = settings
        self.cfg = settings.alerts
        self.stop_event = threading.Event()
        self.identity = uuid.uuid4().hex
        self.log = get_logger(component="alerts")
        self._published: tuple[float, set[str]] = (-PUBLISHED_QUEUES_S, set())

    def run(self) -> None:
        leave_signals_to_main_thread()
        r = connect(self.settings.redis_url_value())
        while True:
            try:
                self.check(r)
            except (redis.RedisError, OSError) as exc:  # Redis restarting: try again next interval
                self.log.warning("alerts.redis_error", error=str(exc))
            except Exception as exc:  # a bad record or a bug must not end alerting for this worker's life
                self.log.error("alerts.check_failed", error=f"{type(exc).__name__}: {exc}")
            if self.stop_event.wait(self.cfg.interval_s):
                return

    def stop(self) -> None:
        self.stop_event.set()

    def check(self, r: redis.Redis) -> None:
        cfg = self.cfg
        now = now_ms(r)
        until = now + int(max(FLAG_INTERVALS * cfg.interval_s, 10.0) * 1000)
        flags = {}
        if cfg.run_failed:
            flags["failed_on"] = until
        if cfg.slow_factor > 0:
            flags["slow_on"] = until
        if flags:
            r.hset(keys.METRICS, mapping=flags)
        hold_ms = max(int(cfg.interval_s * 900), 100)
        if not r.set(keys.ALERT_LOCK, self.identity, nx=True, px=hold_ms):
            return
        phases = (
            (cfg.slow_factor > 0, lambda: self.slow_tasks(r)),
            (cfg.queue_stale_s > 0, lambda: self.stale_queues(r, now)),
            (cfg.failure_rate > 0, lambda: self.failures(r, now)),
        )
        for wanted, phase in phases:
            if not wanted:
                continue
            # still ours? (a long phase may have outlived the lock, and another worker's checker taken it:
            # two checkers would read and write the same cursor and windows) then hold it for another round
            if not self._renew(r, hold_ms):
                self.log.warning("alerts.lock_lost", hint="a check took longer than 0.9 x interval_s")
                return
            phase()

    def _renew(self, r: redis.Redis, hold_ms: int) -> bool:
        return bool(r.eval(_RENEW_LUA, 1, keys.ALERT_LOCK, self.identity, hold_ms))

    def slow_tasks(self, r: redis.Redis) -> None:
        cursor = r.hget(keys.ALERT_STATE, "cursor") or "0-0"
        entries = r.xrange(keys.SETTLED, f"({cursor}", "+", count=READ_BATCH)
        if not entries:
            return
        tasks = sorted({f.get("t", "") for _, f in entries})
        raw = r.hmget(keys.ALERT_STATE, [f"w|{t}" for t in tasks])
        windows: dict[str, list[float]] = {t: json.loads(w) if w else [] for t, w in zip(tasks, raw, strict=True)}
        for _, f in entries:
            task, duration = f.get("t", ""), float(f.get("d", "0"))
            window = windows[task]
            median = alerts.is_slow(duration, window, self.cfg)
            if median is not None:
                summary = (f"task {task} ({f.get('n')} of run {f.get('r')}) took {duration:.3f} s, "
                           f"{duration / median:.1f}x its recent median of {median:.3f} s")  # fmt: skip
                details = {"task": task, "node": f.get("n"), "run_id": f.get("r"), "duration_s": duration,
                           "median_s": median, "factor": self.cfg.slow_factor, "samples": len(window)}  # fmt: skip
                fire(r, "slow_task", task, summary, details, self.cfg, self.settings.run_ttl_s)
            window.append(duration)
            del window[: -self.cfg.slow_window]
        state = {f"w|{t}": json.dumps([round(d, 6) for d in w]) for t, w in windows.items()}
        state["cursor"] = entries[-1][0]
        r.hset(keys.ALERT_STATE, mapping=state)

    def stale_queues(self, r: redis.Redis, now: int) -> None:
        fleet = Fleet(r)
        live, silent = fleet.split()
        consumed = {q for w in live for q in w.queues}
        names = {q for w in live + silent for q in w.queues} | {self.settings.default_queue, *self.settings.queues}
        queues = sorted(names | self.published_queues(r))
        pipe = r.pipeline(transaction=False)
        for q in queues:
            for name in metrics.queue_lists(q):
                pipe.llen(name)
        lengths = pipe.execute()
        first_seen = dict(zip(queues, r.hmget(keys.ALERT_STATE, [f"q|{q}" for q in queues]), strict=True))
        for i, q in enumerate(queues):
            depth = sum(lengths[i * 4 : i * 4 + 4])
            if depth == 0 or q in consumed:
                if first_seen[q] is not None:
                    r.hdel(keys.ALERT_STATE, f"q|{q}")
                continue
            if first_seen[q] is None:
                r.hset(keys.ALERT_STATE, f"q|{q}", now)
                continue
            waited = (now - int(first_seen[q])) / 1000
            if waited >= self.cfg.queue_stale_s:
                summary = (
                    f"queue '{q}' has had {depth} messages waiting for {waited:.0f} s with no live worker consuming it"
                )
                details = {"queue": q, "depth": depth, "waited_s": round(waited, 3), "live_workers": len(live)}
                fire(r, "queue_stale", q, summary, details, self.cfg, self.settings.run_ttl_s)

    def published_queues(self, r: redis.Redis) -> set[str]:
        """Queues the published pipelines' tasks use (read again at most every ``PUBLISHED_QUEUES_S``)."""
        at, queues = self._published
        if time.monotonic() - at < PUBLISHED_QUEUES_S:
            return queues
        queues = set()
        try:
            for pub in Registry(r).all():
                queues |= {n.queue for n in pub.plan.nodes.values()}
        except (ValueError, KeyError):  # a record this version cannot read: the other queues still count
            pass
        self._published = (time.monotonic(), queues)
        return queues

    def failures(self, r: redis.Redis, now: int) -> None:
        ok, bad = alerts.totals(r.hgetall(keys.METRICS))
        window_ms = int(self.cfg.failure_window_s * 1000)
        pipe = r.pipeline(transaction=True)
        pipe.zadd(keys.ALERT_SAMPLES, {f"{now}:{ok}:{bad}": now})
        pipe.zremrangebyscore(keys.ALERT_SAMPLES, "-inf", now - 2 * window_ms)
        pipe.zrangebyscore(keys.ALERT_SAMPLES, now - window_ms, "+inf", start=0, num=1)
        oldest = pipe.execute()[-1]
        if not oldest:
            return
        _, ok0, bad0 = (int(x) for x in oldest[0].split(":"))
        hit = alerts.failure_share((ok, bad), (ok0, bad0), self.cfg)
        if hit is None:
            return
        share, n = hit
        summary = f"{share:.0%} of the {n} attempts that ended in the last {self.cfg.failure_window_s:g} s failed"
        details = {"failure_rate": round(share, 4), "attempts": n, "failed": bad - bad0,
                   "threshold": self.cfg.failure_rate, "window_s": self.cfg.failure_window_s}  # fmt: skip
        fire(r, "failure_rate", "all", summary, details, self.cfg, self.settings.run_ttl_s)


# -- what the notifier delivers for an alert --------------------------------------------------------


@dataclass(frozen=True)
class AlertNotice:
    key: str  #: idempotency key (the same on every attempt)
    ttl_s: int
    targets: list[Target]
    payload: dict[str, Any]
    log_key: str  #: where its delivery attempts are recorded


def alert_notice(r: redis.Redis, settings: Settings, member: str) -> AlertNotice | None:
    """The alert behind outbox member ``alert:<id>``; None if it is gone (expired, or a run no longer failed)."""
    alert_id = member[len(keys.ALERT_MEMBER) :]
    targets = settings.alerts.targets
    ttl = settings.run_ttl_s
    if alert_id.startswith("run_failed:"):
        run_id = alert_id.partition(":")[2]
        k = keys.run_keys(run_id)
        meta = r.hgetall(k.meta)
        if not meta or meta.get("state") != "failed" or meta.get("state") not in TERMINAL_RUN_STATES:
            return None
        from workers.notifier import failed_nodes

        body = build_payload(run_id, meta, failed_nodes(r, k))
        key = "alert:run_failed:" + idempotency_key(run_id, meta.get("finished_at", ""))
        summary = f"run {run_id} of pipeline '{meta.get('pipeline', '')}' failed"
        body = {**body, "event": "alert.run_failed", "alert": "run_failed", "summary": summary}
        body["idempotency_key"] = key
        return AlertNotice(key, int(meta.get("ttl_s") or ttl), targets, body, keys.alert_notifications(alert_id))
    raw = r.get(keys.alert_record(alert_id))
    if not raw:
        return None
    rec = json.loads(raw)
    body = alerts.payload(alert_id, rec["kind"], rec["summary"], rec.get("details") or {}, float(rec["at"]))
    return AlertNotice(body["idempotency_key"], ttl, targets, body, keys.alert_notifications(alert_id))
