"""Embedded workers get the parent's settings as CHORDFLOW_* variables: every field must survive the trip."""

from __future__ import annotations

import os

import pytest

from orchestrator.embedded import settings_env
from orchestrator.settings import Settings


def test_every_setting_round_trips_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(alerts={"webhooks": ["https://hooks.example/x"], "slow_factor": 3.0},
                        queues=["a", "b"], flower_url="http://flower:5555")  # fmt: skip
    env = settings_env(original)
    for name in list(os.environ):
        if name.startswith("CHORDFLOW_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    again = Settings()
    assert again.alerts == original.alerts and again.queues == ["a", "b"]
    assert again.flower_url == "http://flower:5555"
