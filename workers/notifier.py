"""The notifier: announces run ends (webhook, e-mail), from every worker, at least once.

A thread in each worker's main process waits on ``chordflow:notify-wake`` (published by the ledger when
it finalizes a run that has a ``notify`` config; a sweep at least every ``MAX_SLEEP_S`` is the safety
net for a missed message) and claims due runs from the outbox (:mod:`workers.outbox`). Each claimed
run is delivered in its own short-lived thread (at most ``SLOTS`` at once), so a slow receiver never
holds up other runs.

One *round* makes one attempt at every target of the run that is due, records each attempt in the
run's notification list, and then either removes the run from the outbox (every target delivered or
failed for good) or gives it back due at the earliest retry time. Retries are not slept: the backoff
(tenacity's exponential curve with jitter) is waited out in the outbox, by Redis time, so an outage
holds no thread and a worker that dies mid-backoff loses nothing. Which targets are done is read from
the recorded attempts of this run end (same idempotency key), so a round started by another worker
after a crash retries only what was not delivered.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import redis

from orchestrator import alerts, keys
from orchestrator.notify import (
    EVENT,
    NotifyConfig,
    Outcome,
    SmtpConfig,
    Target,
    backoff_s,
    body_bytes,
    build_payload,
    email_message,
    idempotency_key,
    post_webhook,
    send_email,
    webhook_headers,
)
from orchestrator.settings import Settings
from orchestrator.states import TERMINAL_RUN_STATES
from orchestrator.store import connect
from workers.alerting import alert_notice
from workers.logs import get_logger
from workers.outbox import Claim, Outbox
from workers.threads import leave_signals_to_main_thread

MAX_SLEEP_S = 5.0  #: sweep the outbox at least this often (a lost wake-up costs at most this)
SLOTS = 4  #: runs delivered at once by one worker
FINAL = ("delivered", "failed")
ALERT_GIVE_BACK_S = 5.0  #: a worker without [alerts] targets puts a claimed alert back for this long


class Notifier(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chordflow-notifier", daemon=True)
        self.settings = settings
        self.stop_event = threading.Event()
        self.slots = threading.BoundedSemaphore(SLOTS)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.log = get_logger(component="notifier")
        #: the claim outlives one attempt at every target: extended before each attempt
        self.lease_ms = int(max(settings.notify_lease_s, 2 * settings.notify_timeout_s) * 1000)
        self._warned: set[str] = set()

    def run(self) -> None:
        leave_signals_to_main_thread()
        r = connect(self.settings.redis_url_value())
        outbox = Outbox(r)
        pubsub = None
        while not self.stop_event.is_set():
            try:
                if pubsub is None:
                    pubsub = r.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(keys.NOTIFY_CHANNEL)
                wait = self.claim_due(r, outbox)
                pubsub.get_message(timeout=wait)  # returns early when the ledger enqueues a run end
            except redis.RedisError as exc:  # Redis restarting: start over after a pause
                self.log.warning("notifier.redis_error", error=str(exc))
                pubsub = None
                self.stop_event.wait(1.0)

    def stop(self) -> None:
        self.stop_event.set()

    def claim_due(self, r: redis.Redis, outbox: Outbox) -> float:
        """Claim due runs while a delivery slot is free; returns how long to wait before looking again."""
        while not self.stop_event.is_set():
            if not self.slots.acquire(blocking=False):
                return 0.1  # every slot busy: look again shortly
            try:
                claim, wait = outbox.claim(self.lease_ms)
            except BaseException:
                self.slots.release()
                raise
            if claim is None:
                self.slots.release()
                return MAX_SLEEP_S if wait is None else min(max(wait, 0.001), MAX_SLEEP_S)
            threading.Thread(target=self._round, args=(r, outbox, claim), name="chordflow-notify", daemon=True).start()
        return 0.0

    def _round(self, r: redis.Redis, outbox: Outbox, claim: Claim) -> None:
        try:
            self.deliver(r, outbox, claim)
        except Exception as exc:  # a bug or Redis gone: the lease runs out and a worker tries again
            self.log.error("notify.round_failed", run_id=claim.run_id, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.slots.release()

    # -- one round ----------------------------------------------------------------------------------

    def deliver(self, r: redis.Redis, outbox: Outbox, claim: Claim) -> None:
        """One attempt at every due target of the claimed run; then done, or back in the outbox."""
        rid = claim.run_id
        if rid.startswith(keys.ALERT_MEMBER):  # an alert (workers/alerting.py), not a run end
            notice = alert_notice(r, self.settings, rid)
            if notice is not None and not self.settings.alerts.enabled:
                outbox.retry_in(claim, ALERT_GIVE_BACK_S)  # for a worker that has the [alerts] targets
                return
            if notice is None:
                outbox.done(claim)  # expired, or the run is no longer failed
                return
            key, ttl, targets, log_key = notice.key, notice.ttl_s, notice.targets, notice.log_key
            make_payload: Any = lambda: notice.payload  # noqa: E731
        else:
            k = keys.run_keys(rid)
            meta = r.hgetall(k.meta)
            if not meta or meta.get("state") not in TERMINAL_RUN_STATES or "notify" not in meta:
                outbox.done(claim)  # expired, or retried and running again (the ledger enqueues it at its next end)
                return
            key = idempotency_key(rid, meta.get("finished_at", ""))
            ttl = int(meta.get("ttl_s") or self.settings.run_ttl_s)
            log_key = keys.run_notifications(rid)
            try:
                config = NotifyConfig.model_validate_json(meta["notify"])
            except ValueError:
                self._record(r, log_key, ttl, {"key": key, "channel": "config", "target": "", "target_id": "",
                                               "attempt": 1, "outcome": "failed", "detail": "the stored notify "
                                               "config is invalid", "at": _now(r)})  # fmt: skip
                outbox.done(claim)
                return
            if meta["state"] not in config.on:
                outbox.done(claim)
                return
            targets = config.targets
            make_payload = lambda: build_payload(rid, meta, failed_nodes(r, k))  # noqa: E731
        history: dict[str, list[dict[str, Any]]] = {}
        for raw in r.lrange(log_key, 0, -1):
            rec = json.loads(raw)
            if rec.get("key") == key:
                history.setdefault(rec.get("target_id", ""), []).append(rec)
        now = _now(r)
        due: list[tuple[Target, list[dict[str, Any]]]] = []
        later: list[float] = []
        for target in targets:
            recs = history.get(target.id, [])
            if any(x["outcome"] in FINAL for x in recs):
                continue
            next_at = float(recs[-1].get("next_at") or 0) if recs else 0.0
            if next_at > now:
                later.append(next_at)
            else:
                due.append((target, recs))
        payload = make_payload() if due else {}
        for target, recs in due:
            current = outbox.extend(claim, self.lease_ms)
            if current is None:  # no longer ours (lease lost, or the run was enqueued again): its owner goes on
                self.log.warning("notify.claim_lost", run_id=rid)
                return
            claim = current
            next_at = self._attempt(r, rid, log_key, ttl, key, target, recs, payload)
            if next_at is not None:
                later.append(next_at)
        if later:
            if outbox.retry_in(claim, max(0.0, min(later) - _now(r))):
                r.publish(keys.NOTIFY_CHANNEL, rid)  # notifiers sleeping past the new due time look again
        else:
            outbox.done(claim)

    def _attempt(
        self, r: redis.Redis, rid: str, log_key: str, ttl: int, key: str, target: Target, recs: list[dict[str, Any]],
        payload: dict[str, Any],
    ) -> float | None:  # fmt: skip
        """One attempt at ``target``, recorded; returns when to try again (Redis time), or None (final)."""
        s = self.settings
        attempt = len(recs) + 1
        at = _now(r)
        started = time.monotonic()
        if target.channel == "webhook":
            outcome = self._webhook(target, payload, key, at)
        else:
            outcome = self._email(target, payload)
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        first_at = float(recs[0]["at"]) if recs else at
        end = _now(r)
        next_at = None
        if outcome.ok:
            state = "delivered"
        elif outcome.final:
            state = "failed"
        else:
            wait = backoff_s(attempt, s.notify_backoff_s, s.notify_backoff_max_s)
            if outcome.retry_after_s is not None:
                wait = max(wait, min(outcome.retry_after_s, s.notify_backoff_max_s))
            if end + wait > first_at + s.notify_retry_s:
                state = "failed"
                outcome = Outcome(False, True, f"{outcome.detail}; gave up after {attempt} attempts "
                                  f"(notify_retry_s={s.notify_retry_s:g})", outcome.status)  # fmt: skip
            else:
                state, next_at = "retrying", end + wait
        record = {
            "key": key, "channel": target.channel, "target": target.shown, "target_id": target.id,
            "attempt": attempt, "at": round(at, 6), "outcome": state, "detail": outcome.detail,
            "status": outcome.status, "elapsed_ms": elapsed_ms, "worker": self.worker,
            "next_at": None if next_at is None else round(next_at, 6),
        }  # fmt: skip
        self._record(r, log_key, ttl, record)
        log = self.log.info if state == "delivered" else self.log.warning
        log(f"notify.{state}", run_id=rid, channel=target.channel, target=target.shown, attempt=attempt,
            detail=outcome.detail, elapsed_ms=elapsed_ms)  # fmt: skip
        return next_at

    def _webhook(self, target: Target, payload: dict[str, Any], key: str, at: float) -> Outcome:
        secret = self.settings.webhook_secret
        if secret is None or not secret.get_secret_value():
            self._warn_once("webhook_secret", "CHORDFLOW_WEBHOOK_SECRET is not set: webhooks are not sent unsigned")
            return Outcome(False, True, "webhook_secret is not set on this worker: unsigned webhooks are not sent")
        body = body_bytes(payload)
        event = str(payload.get("event") or EVENT)
        headers = webhook_headers(secret.get_secret_value().encode(), str(int(at)), body, key, event)
        return post_webhook(target.address, body, headers, self.settings.notify_timeout_s)

    def _email(self, target: Target, payload: dict[str, Any]) -> Outcome:
        s = self.settings
        if not s.smtp_host:
            self._warn_once("smtp_host", "CHORDFLOW_SMTP_HOST is not set: e-mail notifications cannot be sent")
            return Outcome(False, True, "smtp_host is not set on this worker")
        smtp = SmtpConfig(
            host=s.smtp_host, port=s.smtp_port, starttls=s.smtp_starttls, user=s.smtp_user,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            sender=s.smtp_from, timeout_s=s.notify_timeout_s,
        )  # fmt: skip
        if payload.get("alert"):
            return send_email(smtp, alerts.email_message(payload, smtp.sender, target.address))
        return send_email(smtp, email_message(payload, smtp.sender, target.address))

    def _record(self, r: redis.Redis, log_key: str, ttl: int, record: dict[str, Any]) -> None:
        pipe = r.pipeline(transaction=True)
        pipe.rpush(log_key, json.dumps(record))
        pipe.expire(log_key, ttl)
        pipe.execute()

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            self.log.warning("notify.misconfigured", problem=message)


def _now(r: redis.Redis) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


def failed_nodes(r: redis.Redis, k: keys.RunKeys) -> dict[str, tuple[str, str | None]]:
    """Nodes that did not succeed, with their stored error JSON if they raised one."""
    states = r.hgetall(k.state)
    bad = {n: s for n, s in states.items() if s in ("failed", "upstream_failed", "cancelled")}
    errors = r.hmget(k.errors, list(bad)) if bad else []
    return {n: (s, e) for (n, s), e in zip(bad.items(), errors, strict=True)}
