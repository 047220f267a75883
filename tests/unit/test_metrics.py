"""The metrics module's pure parts: bucket bounds shared with the ledger, exposition of raw counters."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from orchestrator import metrics

REPO = Path(__file__).resolve().parents[2]


def test_ledger_uses_the_same_duration_buckets() -> None:
    ledger = (REPO / "orchestrator" / "lua" / "ledger.lua").read_text()
    found = re.search(r"^local BUCKETS = \{([^}]*)\}", ledger, re.M)
    assert found is not None
    assert tuple(float(x) for x in found.group(1).split(",")) == metrics.DURATION_BUCKETS_S


def test_raw_counters_become_parseable_families() -> None:
    # Given counters as the ledger writes them (bucket 0 is <= 5 ms, bucket 18 is +Inf)
    data = {
        "counters": {
            "run|etl|succeeded": "3", "run|etl|failed": "1", "run|a|b|failed": "2",
            "d|t.x|succeeded|0": "2", "d|t.x|succeeded|7": "1", "du|t.x|succeeded": "1250000",
            "ds|t.x|succeeded": "9.5",  # an older version's field: ignored
            "d|t.x|failed|18": "1", "du|t.x|failed": "4000000000",
            "retry|t.x": "2", "lost|t.x|worker_lost": "1", "timeout|t.x|hard": "1",
            "l|succeed|1": "4", "ls|succeed": "0.004", "alert|slow_task": "1", "slow_on": "123", "junk": "x",
        },  # fmt: skip
        "active": 2, "unacked": 5, "queues": {"chordflow": 7}, "workers": 1,
    }  # fmt: skip
    text = b"".join(_expose(metrics.families(data))).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert samples[("chordflow_runs_finished_total", (("pipeline", "etl"), ("state", "succeeded")))] == 3
    assert samples[("chordflow_runs_finished_total", (("pipeline", "a|b"), ("state", "failed")))] == 2
    key = (("outcome", "succeeded"), ("task", "t.x"))
    assert samples[("chordflow_task_duration_seconds_bucket", (("le", "0.005"), *key))] == 2
    assert samples[("chordflow_task_duration_seconds_bucket", (("le", "1.0"), *key))] == 3
    assert samples[("chordflow_task_duration_seconds_bucket", (("le", "+Inf"), *key))] == 3
    assert samples[("chordflow_task_duration_seconds_count", key)] == 3
    assert samples[("chordflow_task_duration_seconds_sum", key)] == 1.25
    assert samples[("chordflow_task_duration_seconds_count", (("outcome", "failed"), ("task", "t.x")))] == 1
    assert samples[("chordflow_task_retries_total", (("task", "t.x"),))] == 2
    assert samples[("chordflow_tasks_lost_total", (("reason", "worker_lost"), ("task", "t.x")))] == 1
    assert samples[("chordflow_task_timeouts_total", (("kind", "hard"), ("task", "t.x")))] == 1
    assert samples[("chordflow_queue_depth", (("queue", "chordflow"),))] == 7
    assert samples[("chordflow_tasks_in_flight", ())] == 5
    assert samples[("chordflow_runs_active", ())] == 2
    assert samples[("chordflow_ledger_call_seconds_count", (("op", "succeed"),))] == 4
    assert samples[("chordflow_alerts_total", (("kind", "slow_task"),))] == 1


def _expose(fams: object) -> list[bytes]:
    from prometheus_client import CollectorRegistry, generate_latest

    class One:
        def collect(self) -> object:
            return fams

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())  # type: ignore[arg-type]
    return [generate_latest(registry)]
