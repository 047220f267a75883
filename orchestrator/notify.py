"""Run-end notifications: what to notify (config), what is said (payload), and one delivery attempt.

Pure: no Redis, no Celery. Who sends, when, and how often is :mod:`workers.notifier`'s business;
this module makes *one* attempt at *one* target and says whether it worked, failed for good, or may
be tried again (and after how long, by the backoff curve from tenacity). The config lives in a
pipeline's ``[notify]`` table and/or is given per run; the effective config is stored in the run's
meta under ``notify`` at submit, so the workers need neither the pipeline file nor the submitter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Annotated, Any
from urllib.parse import urlsplit

import tenacity
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator.errors import PipelineInvalid, Problem
from orchestrator.redact import NO_SECRETS
from orchestrator.states import TERMINAL_RUN_STATES, RunState

EVENT = "run.finished"
MAX_WEBHOOKS = 10
MAX_EMAILS = 20
MAX_FAILED_LISTED = 50  #: failed tasks named in one payload
MAX_ERROR_CHARS = 500
_URL = TypeAdapter(AnyHttpUrl)
#: one address, no display name: nothing that could break out of a header (no spaces, CR/LF, commas, <>)
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$", re.ASCII)
TERMINAL = tuple(sorted(str(s) for s in TERMINAL_RUN_STATES))


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("notify_config", "{message}", {"message": message})


def _http_url(url: str) -> str:
    if len(url) > 2048:
        raise _invalid("a webhook URL is longer than 2048 characters")
    try:
        parsed = _URL.validate_python(url)
    except ValidationError as exc:
        raise _invalid(f"{display_url(url)!r} is not an http(s) URL: {exc.errors()[0]['msg']}") from None
    if not parsed.host:
        raise _invalid(f"{display_url(url)!r} has no host")
    return url


def _email(addr: str) -> str:
    if not _EMAIL.fullmatch(addr):
        raise _invalid(f"{addr[:80]!r} is not a plain e-mail address (user@domain)")
    return addr


class NotifyConfig(BaseModel):
    """Where a run's end is announced: ``[notify]`` in a pipeline file, or per run (``notify=``)."""

    model_config = ConfigDict(extra="forbid")

    webhooks: list[Annotated[str, AfterValidator(_http_url)]] = Field(default_factory=list, max_length=MAX_WEBHOOKS)
    emails: list[Annotated[str, AfterValidator(_email)]] = Field(default_factory=list, max_length=MAX_EMAILS)
    on: list[RunState] = Field(default_factory=lambda: [RunState(s) for s in TERMINAL], min_length=1)

    @field_validator("webhooks", "emails")
    @classmethod
    def _dedup(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @field_validator("on")
    @classmethod
    def _terminal(cls, v: list[RunState]) -> list[RunState]:
        for state in v:
            if state not in TERMINAL_RUN_STATES:
                raise _invalid(f"'{state}' is not a state a run ends in ({', '.join(TERMINAL)})")
        return list(dict.fromkeys(v))

    @property
    def targets(self) -> list[Target]:
        return [Target("webhook", u) for u in self.webhooks] + [Target("email", a) for a in self.emails]


def effective(pipeline: NotifyConfig | None, run: NotifyConfig | Mapping[str, Any] | None) -> NotifyConfig | None:
    """The pipeline's config merged with the run's: targets add up (deduplicated); the run's ``on``, if it
    gives one, replaces the pipeline's. None when there is nothing to notify.

    Raises:
        PipelineInvalid: ``run`` is not a valid config (the problem names the field, e.g. ``notify.webhooks.0``).
    """
    if run is not None and not isinstance(run, NotifyConfig):
        try:
            run = NotifyConfig.model_validate(run)
        except ValidationError as exc:
            raise PipelineInvalid([
                Problem("unknown field" if e["type"] == "extra_forbidden" else e["msg"],
                        field=".".join(["notify", *(str(p) for p in e["loc"])]))
                for e in exc.errors()
            ]) from None
    if pipeline is None and run is None:
        return None
    if pipeline is None or run is None:
        merged = pipeline or run
    else:
        merged = NotifyConfig(
            webhooks=pipeline.webhooks + run.webhooks,
            emails=pipeline.emails + run.emails,
            on=run.on if "on" in run.model_fields_set else pipeline.on,
        )
    assert merged is not None
    return merged if merged.targets else None


def display_url(url: str) -> str:
    """A webhook URL as it may be shown or logged: scheme, host and port only (paths and queries of
    webhook URLs are often the secret, e.g. chat incoming-webhook tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    rest = "/..." if parts.path not in ("", "/") or parts.query else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


def public_view(raw: str | None) -> dict[str, Any] | None:
    """The stored ``notify`` meta field as status output may show it (webhook URLs cut to their host)."""
    if not raw:
        return None
    try:
        cfg = NotifyConfig.model_validate_json(raw)
    except ValueError:
        return {"invalid": True}
    return {"webhooks": [display_url(u) for u in cfg.webhooks], "emails": cfg.emails, "on": [str(s) for s in cfg.on]}


@dataclass(frozen=True)
class Target:
    """One place a notification goes."""

    channel: str  #: webhook | email
    address: str  #: the URL or the e-mail address

    @property
    def id(self) -> str:
        """Stable, non-secret identity (the URL itself may hold a token)."""
        return hashlib.sha256(f"{self.channel}\0{self.address}".encode()).hexdigest()[:16]

    @property
    def shown(self) -> str:
        return display_url(self.address) if self.channel == "webhook" else self.address


# -- the payload ------------------------------------------------------------------------------------


def idempotency_key(run_id: str, finished_at: str) -> str:
    """Same for every attempt at one run end; a run retried and ending again gets a new one."""
    return f"{run_id}:{finished_at}"


def _iso(epoch: str | None) -> str | None:
    return datetime.fromtimestamp(float(epoch), UTC).isoformat() if epoch else None


def build_payload(run_id: str, meta: Mapping[str, str], failed: Mapping[str, tuple[str, str | None]]) -> dict[str, Any]:
    """The JSON body: what ended, how, and which tasks failed with why (masked). Never params or results.

    ``meta`` is the run's meta hash; ``failed`` maps a node to (its state, its stored error JSON).
    """
    created, finished = meta.get("created_at"), meta.get("finished_at")
    counts = {k[2:]: int(v) for k, v in meta.items() if k.startswith("n_") and v.lstrip("-").isdigit()}
    failed_tasks = []
    for node in sorted(failed)[:MAX_FAILED_LISTED]:
        state, raw = failed[node]
        entry: dict[str, Any] = {"task": NO_SECRETS.text(node, 200), "state": state}
        if raw:
            try:
                err = json.loads(raw)
            except ValueError:
                err = {"type": "error", "message": raw}
            if isinstance(err, dict):
                entry["error"] = {
                    "type": NO_SECRETS.text(str(err.get("type", "error")), 200),
                    "message": NO_SECRETS.text(str(err.get("message", "")), MAX_ERROR_CHARS),
                }
        failed_tasks.append(entry)
    return {
        "event": EVENT,
        "idempotency_key": idempotency_key(run_id, finished or ""),
        "run_id": run_id,
        "pipeline": meta.get("pipeline", ""),
        "state": meta.get("state", ""),
        "created_at": _iso(created),
        "finished_at": _iso(finished),
        "duration_s": round(float(finished) - float(created), 6) if created and finished else None,
        "retries": int(meta.get("retries", "0") or 0),
        "tasks": {"total": int(meta.get("total", "0") or 0), "counts": counts},
        "failed_tasks": failed_tasks,
        "failed_tasks_omitted": max(0, len(failed) - MAX_FAILED_LISTED),
    }


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """Canonical JSON: the exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


# -- one attempt ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one attempt at one target did."""

    ok: bool
    final: bool  #: no point in trying again (delivered, or refused for good)
    detail: str = ""  #: HTTP status line or SMTP reply / exception, masked
    status: int | None = None
    retry_after_s: float | None = None  #: what the receiver asked for (429/503 Retry-After)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``"<timestamp>." + body``: what a receiver recomputes."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def webhook_headers(secret: bytes, timestamp: str, body: bytes, key: str, event: str = EVENT) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "chordflow-notifier",
        "X-Chordflow-Event": event,
        "X-Chordflow-Timestamp": timestamp,
        "X-Chordflow-Idempotency-Key": key,
        "X-Chordflow-Signature": signature(secret, timestamp, body),
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a hop: urllib would turn the POST into a body-less GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_webhook(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Outcome:
    """POST once. 2xx delivered; 408, 429, 5xx and network errors may be retried; any other answer is final."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as resp:
            resp.read(65536)
            return Outcome(ok=True, final=True, detail=f"HTTP {resp.status}", status=resp.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
        retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        transient = code in (408, 429) or code >= 500
        return Outcome(ok=False, final=not transient, detail=f"HTTP {code}", status=code, retry_after_s=retry_after)
    except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, reset, timeout, DNS
        reason = getattr(exc, "reason", exc)
        return Outcome(ok=False, final=False, detail=NO_SECRETS.text(f"{type(reason).__name__}: {reason}", 300))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    starttls: bool
    user: str | None
    password: str | None
    sender: str
    timeout_s: float


def email_message(payload: Mapping[str, Any], sender: str, to: str) -> EmailMessage:
    """Subject ``[chordflow] <pipeline> <run_id>: <state>``; the body says it in words, then the JSON."""
    msg = EmailMessage()
    msg["Subject"] = f"[chordflow] {_header_safe(payload['pipeline'])} {payload['run_id']}: {payload['state']}"
    msg["From"] = sender
    msg["To"] = to
    run_part = payload["run_id"].replace(":", ".")
    msg["Message-ID"] = f"<{run_part}.{str(payload['finished_at'] or '').replace(':', '')}@chordflow>"
    msg["X-Chordflow-Idempotency-Key"] = payload["idempotency_key"]
    counts = ", ".join(f"{k}={v}" for k, v in sorted(payload["tasks"]["counts"].items()))
    lines = [
        f"Run {payload['run_id']} of pipeline '{payload['pipeline']}' ended: {payload['state']}.",
        f"Created {payload['created_at']}, finished {payload['finished_at']} ({payload['duration_s']} s).",
        f"Tasks: {payload['tasks']['total']} ({counts}).",
    ]
    for t in payload["failed_tasks"]:
        err = t.get("error") or {}
        lines.append(f"  {t['task']}: {t['state']}" + (f": {err.get('type')}: {err.get('message')}" if err else ""))
    lines += ["", json.dumps(payload, indent=2, sort_keys=True)]
    msg.set_content("\n".join(lines))
    return msg


def _header_safe(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(text))[:120]


def send_email(smtp: SmtpConfig, msg: EmailMessage) -> Outcome:
    """One SMTP session. A 5xx reply is final; 4xx replies and network errors may be retried."""
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as conn:
            conn.ehlo()
            if smtp.starttls:
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if smtp.user:
                conn.login(smtp.user, smtp.password or "")
            conn.send_message(msg)
        return Outcome(ok=True, final=True, detail="250 accepted", status=250)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [c for c, _ in exc.recipients.values()]
        return Outcome(ok=False, final=all(c >= 500 for c in codes), detail=f"recipient refused: {codes}",
                       status=codes[0] if codes else None)  # fmt: skip
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return Outcome(ok=False, final=exc.smtp_code >= 500, detail=NO_SECRETS.text(f"{exc.smtp_code} {text}", 300),
                       status=exc.smtp_code)  # fmt: skip
    except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, TLS
        return Outcome(ok=False, final=False, detail=NO_SECRETS.text(f"{type(exc).__name__}: {exc}", 300))


# -- when to try again ------------------------------------------------------------------------------


def backoff_s(attempt: int, first_s: float, max_s: float) -> float:
    """Wait after failed attempt number ``attempt`` (1-based): tenacity's exponential backoff with jitter.

    The wait is not slept: :mod:`workers.notifier` re-scores the run in the outbox, so a long outage
    holds no thread and survives the death of the worker that saw it.
    """
    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = attempt
    return float(tenacity.wait_exponential_jitter(multiplier=first_s, max=max_s, jitter=first_s)(state))
