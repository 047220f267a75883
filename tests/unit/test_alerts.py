"""Alert arithmetic and configuration (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.alerts import AlertConfig, failure_share, is_slow, totals
from orchestrator.embedded import settings_env
from orchestrator.settings import Settings


def test_slow_is_k_times_the_median_of_enough_previous_attempts() -> None:
    cfg = AlertConfig(slow_factor=4, slow_min_samples=3, slow_min_s=0.3)
    assert is_slow(1.0, [0.1, 0.2, 0.1], cfg) == 0.1
    assert is_slow(1.0, [0.1, 0.2], cfg) is None  # too few samples
    assert is_slow(0.25, [0.01, 0.01, 0.01], cfg) is None  # under slow_min_s
    assert is_slow(0.35, [0.1, 0.1, 0.1], cfg) is None  # 3.5x: not over 4x
    assert is_slow(9.0, [0.1, 0.1, 0.1], AlertConfig()) is None  # off by default


def test_failure_share_over_the_window() -> None:
    cfg = AlertConfig(failure_rate=0.5, failure_min_tasks=4)
    assert failure_share((10, 6), (8, 2), cfg) == (4 / 6, 6)
    assert failure_share((10, 3), (8, 2), cfg) is None  # 3 attempts: too few
    assert failure_share((20, 3), (8, 2), cfg) is None  # 1 of 13
    assert totals({"d|t|succeeded|0": "3", "d|t|succeeded|18": "1", "d|u|failed|4": "2", "d|t|retrying|1": "5",
                   "ds|t|succeeded": "100", "run|p|failed": "9"}) == (4, 2)  # fmt: skip


def test_targets_are_checked_and_the_table_survives_the_trip_to_embedded_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="not an http"):
        AlertConfig(webhooks=["ftp://x/"])
    with pytest.raises(ValidationError):
        AlertConfig(slow_factr=3)  # type: ignore[call-arg]
    s = Settings(alerts=AlertConfig(webhooks=["https://ops.example.com/h"], slow_factor=5, queue_stale_s=60))
    for name, value in settings_env(s).items():
        monkeypatch.setenv(name, value)
    again = Settings()
    assert again.alerts == s.alerts and again.alerts.enabled


def test_an_alerts_table_in_the_config_file_with_an_environment_override(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    conf = Path(str(tmp_path))
    (conf / "dev.toml").write_text('[alerts]\nwebhooks = ["https://ops.example.com/h"]\nslow_factor = 5\n')
    monkeypatch.setenv("CHORDFLOW_CONFIG_DIR", str(conf))
    monkeypatch.setenv("CHORDFLOW_ALERTS__QUEUE_STALE_S", "300")
    alerts = Settings().alerts
    assert (alerts.webhooks, alerts.slow_factor, alerts.queue_stale_s) == (["https://ops.example.com/h"], 5, 300)
