"""The pure half of notifications: config, merge, payload, signature, backoff (no Redis, no network)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import PipelineInvalid
from orchestrator.notify import (
    NotifyConfig,
    backoff_s,
    body_bytes,
    build_payload,
    display_url,
    effective,
    email_message,
    webhook_headers,
)

META = {
    "pipeline": "etl", "state": "failed", "created_at": "1795500000.000000", "finished_at": "1795500012.500000",
    "total": "3", "n_succeeded": "1", "n_failed": "1", "n_upstream_failed": "1", "ttl_s": "60",
    "notify": json.dumps({"webhooks": ["https://hooks.example/T0/secret-path"]}), "source": "/srv/etl.toml",
}  # fmt: skip


def readme_verify() -> Any:
    """The receiver's check exactly as README "Notifications" shows it."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(import hashlib, hmac, time\n\ndef verify_chordflow.*?)```", text, re.S)
    assert code, "README lost its verify_chordflow snippet"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)  # noqa: S102 - our own README
    return namespace["verify_chordflow"]


def test_signature_is_what_the_readme_tells_receivers_to_compute() -> None:
    body = body_bytes(build_payload("20261124-000000-abcdef", META, {}))
    now = str(int(time.time()))
    headers = webhook_headers(b"k3y", now, body, "rid:1")
    expected = hmac.new(b"k3y", now.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Chordflow-Signature"] == f"sha256={expected}"
    verify = readme_verify()
    assert verify(b"k3y", headers, body)
    assert not verify(b"other", headers, body)
    assert not verify(b"k3y", headers, body + b" ")
    assert not verify(b"k3y", {**headers, "X-Chordflow-Timestamp": str(int(now) - 3600)}, body)  # replayed late
    assert headers["X-Chordflow-Timestamp"] == now
    assert headers["X-Chordflow-Idempotency-Key"] == "rid:1"
    assert headers["X-Chordflow-Event"] == "run.finished"


def test_payload_has_the_run_end_and_masked_errors_but_no_config_or_params() -> None:
    failed = {
        "load": ("failed", json.dumps({"type": "OperationalError", "message": "redis://:pw-123456@db failed",
                                       "traceback": "line 1"})),  # fmt: skip
        "report": ("upstream_failed", None),
    }
    payload = build_payload("20261124-000000-abcdef", META, failed)
    assert payload["idempotency_key"] == "20261124-000000-abcdef:1795500012.500000"
    assert payload["duration_s"] == 12.5
    assert payload["tasks"] == {"total": 3, "counts": {"succeeded": 1, "failed": 1, "upstream_failed": 1}}
    assert payload["failed_tasks"][0] == {
        "task": "load", "state": "failed", "error": {"type": "OperationalError", "message": "redis://:***@db failed"}
    }
    text = json.dumps(payload)
    assert "pw-123456" not in text and "secret-path" not in text and "/srv/etl.toml" not in text
    assert "traceback" not in text


def test_per_run_targets_add_to_the_pipeline_and_its_on_replaces() -> None:
    pipeline = NotifyConfig(webhooks=["https://a.example/x"], emails=["ops@example.com"], on=["failed"])
    merged = effective(pipeline, {"webhooks": ["https://b.example/y", "https://a.example/x"]})
    assert merged is not None
    assert merged.webhooks == ["https://a.example/x", "https://b.example/y"]
    assert merged.emails == ["ops@example.com"] and merged.on == ["failed"]
    merged = effective(pipeline, {"on": ["succeeded"]})
    assert merged is not None and merged.on == ["succeeded"]
    assert effective(None, {"webhooks": [], "emails": []}) is None
    assert effective(None, None) is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"webhooks": ["file:///etc/passwd"]}, "notify.webhooks.0"),
        ({"emails": ["a@b.example\r\nBcc: x@y"]}, "notify.emails.0"),
        ({"on": ["pending"]}, "notify.on"),
        ({"on": []}, "notify.on"),
        ({"webhooks": ["https://x.example/"] * 11}, "notify.webhooks"),
        ({"retries": 3}, "notify.retries"),
    ],
)
def test_bad_per_run_config_names_the_field(raw: dict, field: str) -> None:
    with pytest.raises(PipelineInvalid) as err:
        effective(None, raw)
    assert f"field '{field}'" in str(err.value)


def test_webhook_urls_are_shown_without_path_query_or_credentials() -> None:
    assert display_url("https://user:pw@hooks.example:8443/services/T0/B0/XyZ?token=1") == "https://hooks.example:8443/..."
    assert display_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000/"


def test_email_subject_cannot_carry_header_lines() -> None:
    payload = build_payload("20261124-000000-abcdef", {**META, "pipeline": "etl\r\nBcc: evil@example.com"}, {})
    msg = email_message(payload, "chordflow@example.com", "ops@example.com")
    assert msg["Subject"] == "[chordflow] etl  Bcc: evil@example.com 20261124-000000-abcdef: failed"
    assert msg["Bcc"] is None


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    waits = [backoff_s(n, 1.0, 8.0) for n in range(1, 7)]
    assert 1.0 <= waits[0] <= 2.0 and 2.0 <= waits[1] <= 3.0 and 4.0 <= waits[2] <= 5.0
    assert waits[4] == waits[5] == 8.0
