"""Alerts: conditions worth telling someone about, delivered like run-end notifications.

Configured once for the fleet (``[alerts]`` in ``config/<env>.toml``, or ``CHORDFLOW_ALERTS__<FIELD>``
environment variables) on the workers: they check the conditions and deliver the alerts (webhook,
e-mail) through the same outbox, retries and signing as run-end notifications
(:mod:`workers.notifier`). Four conditions:

* ``run_failed``: a run ended ``failed``. The ledger enqueues the alert in the step that ends the run.
* ``slow_task``: a successful attempt took more than ``slow_factor`` times the median of that task's
  ``slow_window`` previous successful attempts (at least ``slow_min_samples`` of them, and at least
  ``slow_min_s`` seconds). The ledger adds every successful attempt's duration to a capped stream; the
  checker reads it (:mod:`workers.alerting`).
* ``queue_stale``: a queue has had messages waiting for ``queue_stale_s`` seconds while no live worker
  consumes it.
* ``failure_rate``: over the last ``failure_window_s`` seconds, at least ``failure_min_tasks`` attempts
  ended and the share of them that failed for good is at least ``failure_rate``.

Each condition fires at most once per ``repeat_s`` for the same subject (a task, a queue; every failed
run is its own subject). This module is pure: the model, the arithmetic and what is said.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from orchestrator.notify import Target, _email, _header_safe, _http_url

KINDS = ("run_failed", "slow_task", "queue_stale", "failure_rate")


class AlertConfig(BaseModel):
    """The ``[alerts]`` table (README "Alerts"); nothing fires without a webhook or an e-mail address."""

    model_config = ConfigDict(extra="forbid")

    webhooks: list[Annotated[str, AfterValidator(_http_url)]] = Field(default_factory=list, max_length=10)
    emails: list[Annotated[str, AfterValidator(_email)]] = Field(default_factory=list, max_length=20)
    run_failed: bool = Field(True, description="alert when a run ends failed")
    slow_factor: float = Field(0.0, ge=0, description="alert when an attempt takes over this times its task's "
                               "recent median; 0: off")  # fmt: skip
    slow_window: int = Field(20, ge=1, le=1000, description="successful attempts per task the median is taken over")
    slow_min_samples: int = Field(5, ge=1, description="attempts a task needs in its window before it can be slow")
    slow_min_s: float = Field(1.0, ge=0, description="an attempt shorter than this is never slow")
    queue_stale_s: float = Field(0.0, ge=0, description="alert when a queue has waited this long with no live "
                                 "consumer; 0: off")  # fmt: skip
    failure_rate: float = Field(0.0, ge=0, le=1, description="alert when this share of the attempts that ended "
                                "in the window failed; 0: off")  # fmt: skip
    failure_window_s: float = Field(300.0, gt=0, description="the failure-rate window")
    failure_min_tasks: int = Field(20, ge=1, description="attempts that must end in the window before the rate counts")
    interval_s: float = Field(5.0, ge=0.1, description="how often the conditions are checked")
    repeat_s: float = Field(3600.0, ge=0, description="one alert per condition and subject per this many seconds")

    @property
    def enabled(self) -> bool:
        return bool(self.webhooks or self.emails)

    @property
    def targets(self) -> list[Target]:
        return [Target("webhook", u) for u in dict.fromkeys(self.webhooks)] + [
            Target("email", a) for a in dict.fromkeys(self.emails)
        ]


def is_slow(duration_s: float, previous: Sequence[float], cfg: AlertConfig) -> float | None:
    """The median it is compared with if an attempt of ``duration_s`` is slow after ``previous``; else None."""
    if cfg.slow_factor <= 0 or len(previous) < cfg.slow_min_samples or duration_s < cfg.slow_min_s:
        return None
    median = statistics.median(previous)
    return median if duration_s > cfg.slow_factor * median else None


def failure_share(now: tuple[int, int], then: tuple[int, int], cfg: AlertConfig) -> tuple[float, int] | None:
    """(failed share, attempts) between two (succeeded, failed) totals, if over the threshold; else None."""
    ok, bad = now[0] - then[0], now[1] - then[1]
    n = ok + bad
    if cfg.failure_rate <= 0 or n < cfg.failure_min_tasks or n <= 0:
        return None
    share = bad / n
    return (share, n) if share >= cfg.failure_rate else None


def totals(counters: Mapping[str, str]) -> tuple[int, int]:
    """(succeeded, failed) attempts so far, from the duration histogram's bucket counts (metrics hash)."""
    ok = bad = 0
    for field, raw in counters.items():
        if not field.startswith("d|"):
            continue
        _, _, rest = field.partition("|")
        parts = rest.rsplit("|", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "succeeded":
            ok += int(raw)
        elif parts[1] == "failed":
            bad += int(raw)
    return ok, bad


def payload(alert_id: str, kind: str, summary: str, details: Mapping[str, Any], at: float) -> dict[str, Any]:
    """The JSON body of an alert's webhook (and the tail of its e-mail)."""
    return {
        "event": f"alert.{kind}",
        "idempotency_key": f"alert:{alert_id}",
        "alert": kind,
        "summary": summary,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        "details": dict(details),
    }


def email_message(body: Mapping[str, Any], sender: str, to: str) -> EmailMessage:
    """Subject ``[chordflow] alert: <summary>``; the body says it in words, then the JSON."""
    msg = EmailMessage()
    msg["Subject"] = f"[chordflow] alert: {_header_safe(body['summary'])}"
    msg["From"] = sender
    msg["To"] = to
    msg["Message-ID"] = f"<{body['idempotency_key'].replace(':', '.')}@chordflow>"
    msg["X-Chordflow-Idempotency-Key"] = body["idempotency_key"]
    msg.set_content(f"{body['summary']}\n\n{json.dumps(body, indent=2, sort_keys=True)}")
    return msg
