"""Project rules that can be checked mechanically."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PURE = ["orchestrator.spec", "orchestrator.model", "orchestrator.loader", "orchestrator.validate",
        "orchestrator.fingerprint", "orchestrator.plan", "orchestrator.states", "orchestrator.keys",
        "orchestrator.context"]  # fmt: skip


def test_pipeline_model_imports_no_celery_and_no_redis() -> None:
    code = (
        "import sys\n"
        "for m in ('celery', 'redis', 'kombu'): sys.modules[m] = None\n"
        + "".join(f"import {m}\n" for m in PURE)
        + "import tasks.etl\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_redis_keys_are_built_only_in_keys_module() -> None:
    offenders = []
    for path in (
        list((REPO / "orchestrator").rglob("*.py"))
        + list((REPO / "workers").rglob("*.py"))
        + list((REPO / "tests").rglob("*.py"))
    ):
        if path.name == "keys.py" or path == Path(__file__).resolve():
            continue
        if '"chordflow:' in path.read_text() or "'chordflow:" in path.read_text():
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_ledger_wakes_the_channel_the_schedulers_listen_on() -> None:
    from orchestrator import keys

    ledger = (REPO / "orchestrator" / "lua" / "ledger.lua").read_text()
    assert f"local WAKE_CHANNEL = '{keys.WAKE_CHANNEL}'" in ledger
    assert f"local NOTIFY_CHANNEL = '{keys.NOTIFY_CHANNEL}'" in ledger
