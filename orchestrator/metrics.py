"""Prometheus metrics, cluster-wide: counters kept in Redis as things happen, read whole by a scrape.

Tasks run on many workers on many hosts, and ``/metrics`` is served by ``chordflow serve``, which runs
none of them. So the counters live in one Redis hash, :data:`keys.METRICS`, and are kept where the
thing happens:

* the ledger (``lua/ledger.lua``) counts, in the atomic step it already makes: each run's end (by
  pipeline and final state), each attempt's duration by task and outcome (a histogram with fixed
  buckets, :data:`DURATION_BUCKETS_S`: one HINCRBY for the bucket, one for the sum in microseconds),
  retries, attempts lost with their worker or their message, and time limits;
* each process that calls the ledger times those calls (:data:`LEDGER_LATENCY`) in memory and adds
  them to the hash at most every :data:`FLUSH_S` seconds: no extra round trip per task.

A scrape (:class:`ChordflowCollector`) reads that hash, the size of the active-runs set, kombu's
``unacked`` hash (messages delivered to workers and not yet acknowledged: tasks in flight), the
worker registry (for queue names) and the length of each known queue: two round trips, whatever the
number of runs in history. The hash grows with the number of task names, not with runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from orchestrator import keys

#: upper bounds (seconds) of the task duration histogram; ledger.lua has the same list
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: upper bounds (seconds) of the ledger call latency histogram (measured by the caller, round trip included)
LEDGER_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
FLUSH_S = 5.0  #: a process adds its ledger timings to Redis at most this often
KOMBU_PRIORITY_SEP = "\x06\x16"  #: kombu's Redis transport keeps priority p of queue q in list q + SEP + p
KOMBU_PRIORITY_STEPS = (3, 6, 9)  #: kombu's default steps besides 0 (which is the queue's own list)


class LatencyRecorder:
    """Ledger call latencies of this process, by operation, as histogram bucket counts; flushed to
    :data:`keys.METRICS` (``l|<op>|<bucket>``, ``ls|<op>``) by the first call after ``FLUSH_S``.

    Safe across fork (a forked child starts empty: the parent's pending counts are the parent's to
    flush) and across threads (the heartbeat thread calls the ledger too).
    """

    def __init__(self, flush_s: float = FLUSH_S) -> None:
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self._reset()
        # a child forked while a thread of the parent (reaper, scheduler) held the lock would inherit it held
        # and hang at its first ledger call: the child gets a fresh lock and starts empty
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._counts: dict[str, int] = {}
        self._sums: dict[str, float] = {}
        self._last = time.monotonic()

    def observe(self, client: Any, op: str, seconds: float) -> None:
        bucket = len(LEDGER_BUCKETS_S)
        for i, bound in enumerate(LEDGER_BUCKETS_S):
            if seconds <= bound:
                bucket = i
                break
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            field = f"l|{op}|{bucket}"
            self._counts[field] = self._counts.get(field, 0) + 1
            self._sums[op] = self._sums.get(op, 0.0) + seconds
            if time.monotonic() - self._last < self.flush_s:
                return
            counts, sums = self._counts, self._sums
            self._counts, self._sums, self._last = {}, {}, time.monotonic()
        self._flush(client, counts, sums)

    def flush(self, client: Any) -> None:
        """Add what this process measured so far (at exit, in tests)."""
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            counts, sums = self._counts, self._sums
            self._counts, self._sums, self._last = {}, {}, time.monotonic()
        self._flush(client, counts, sums)

    @staticmethod
    def _flush(client: Any, counts: dict[str, int], sums: dict[str, float]) -> None:
        if not counts:
            return
        try:
            pipe = client.pipeline(transaction=False)
            for field, n in counts.items():
                pipe.hincrby(keys.METRICS, field, n)
            for op, total in sums.items():
                pipe.hincrbyfloat(keys.METRICS, f"ls|{op}", round(total, 6))
            pipe.execute()
        except Exception:  # noqa: BLE001 - a lost sample must never fail a task
            pass


LEDGER_LATENCY = LatencyRecorder()


def known_queues(settings: Any, announcements: Iterable[str]) -> list[str]:
    """Queues to report: the configured ones and every queue a registered worker announced."""
    import json

    names = {settings.default_queue, *settings.queues}
    for raw in announcements:
        try:
            names.update(json.loads(raw).get("queues") or [])
        except (ValueError, AttributeError):
            continue
    return sorted(n for n in names if isinstance(n, str) and n)


def queue_lists(queue: str) -> list[str]:
    """kombu's lists of one queue: its own (priority 0) and one per other priority step."""
    return [queue] + [f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS]


def read(client: Any, settings: Any) -> dict[str, Any]:
    """Everything a scrape shows, in two round trips (independent of the number of runs)."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.METRICS)
    pipe.scard(keys.ACTIVE_RUNS)
    pipe.hlen(keys.KOMBU_UNACKED)
    pipe.hvals(keys.WORKERS)
    pipe.time()
    counters, active, unacked, announcements, (sec, usec) = pipe.execute()
    now_ms = sec * 1000 + usec // 1000
    queues = known_queues(settings, announcements)
    pipe = client.pipeline(transaction=False)
    for q in queues:
        for name in queue_lists(q):
            pipe.llen(name)
    pipe.zcount(keys.WORKERS_SEEN, now_ms, "+inf")
    lengths = pipe.execute()
    depth = {q: sum(lengths[i * 4 : i * 4 + 4]) for i, q in enumerate(queues)}
    return {"counters": counters, "active": active, "unacked": unacked, "queues": depth, "workers": lengths[-1]}


def _buckets(counts: dict[int, int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets from per-bucket counts (index len(bounds) is +Inf)."""
    from prometheus_client.utils import floatToGoString

    out, total = [], 0
    for i, bound in enumerate(bounds):
        total += counts.get(i, 0)
        out.append((floatToGoString(bound), total))
    total += counts.get(len(bounds), 0)
    out.append(("+Inf", total))
    return out


def families(data: dict[str, Any]) -> Iterator[Any]:
    """The metric families of one :func:`read` (prometheus_client objects)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    runs = CounterMetricFamily(
        "chordflow_runs_finished",
        "Runs that ended, by pipeline and final state (a retried run counts again when it ends again)",
        labels=["pipeline", "state"],
    )
    retries = CounterMetricFamily(
        "chordflow_task_retries", "Attempts that failed and were scheduled to run again", labels=["task"]
    )
    lost = CounterMetricFamily(
        "chordflow_tasks_lost",
        "Attempts lost: worker_lost (pool process died), lease_expired "
        "(worker gone, found by the reaper), message_lost",
        labels=["task", "reason"],
    )
    timeouts = CounterMetricFamily(
        "chordflow_task_timeouts",
        "Attempts stopped by a time limit (soft: SoftTimeLimitExceeded raised; hard: process killed)",
        labels=["task", "kind"],
    )
    alerts = CounterMetricFamily("chordflow_alerts", "Alerts fired, by kind", labels=["kind"])
    durations: dict[tuple[str, str], dict[int, int]] = {}
    dsums: dict[tuple[str, str], float] = {}
    ledger: dict[str, dict[int, int]] = {}
    lsums: dict[str, float] = {}
    for field, raw in data["counters"].items():
        kind, _, rest = field.partition("|")
        try:
            if kind == "run":
                pipeline, state = rest.rsplit("|", 1)
                runs.add_metric([pipeline, state], int(raw))
            elif kind == "d":
                task, outcome, bucket = rest.rsplit("|", 2)
                durations.setdefault((task, outcome), {})[int(bucket)] = int(raw)
            elif kind == "du":
                task, outcome = rest.rsplit("|", 1)
                dsums[(task, outcome)] = int(raw) / 1e6  # microseconds
            elif kind == "retry":
                retries.add_metric([rest], int(raw))
            elif kind == "lost":
                task, reason = rest.rsplit("|", 1)
                lost.add_metric([task, reason], int(raw))
            elif kind == "timeout":
                task, how = rest.rsplit("|", 1)
                timeouts.add_metric([task, how], int(raw))
            elif kind == "alert":
                alerts.add_metric([rest], int(raw))
            elif kind == "l":
                op, bucket = rest.rsplit("|", 1)
                ledger.setdefault(op, {})[int(bucket)] = int(raw)
            elif kind == "ls":
                lsums[rest] = float(raw)
        except ValueError:  # a field this version does not know how to read
            continue
    hist = HistogramMetricFamily(
        "chordflow_task_duration_seconds",
        "Duration of task attempts (Redis time from "
        "the attempt's start to its outcome), by task and outcome "
        "(succeeded, failed, retrying, worker_lost, timeout)",
        labels=["task", "outcome"],
    )
    for (task, outcome), counts in sorted(durations.items()):
        hist.add_metric([task, outcome], _buckets(counts, DURATION_BUCKETS_S), dsums.get((task, outcome), 0.0))
    lat = HistogramMetricFamily(
        "chordflow_ledger_call_seconds",
        "Round trip of ledger calls as their caller measured it (workers, clients), by operation",
        labels=["op"],
    )
    for op, counts in sorted(ledger.items()):
        lat.add_metric([op], _buckets(counts, LEDGER_BUCKETS_S), lsums.get(op, 0.0))
    depth = GaugeMetricFamily(
        "chordflow_queue_depth",
        "Messages waiting in a Celery queue (configured queues and those registered workers consume)",
        labels=["queue"],
    )
    for q, n in data["queues"].items():
        depth.add_metric([q], n)
    yield runs
    yield GaugeMetricFamily("chordflow_runs_active", "Runs not yet finished", value=data["active"])
    yield hist
    yield retries
    yield lost
    yield timeouts
    yield depth
    yield GaugeMetricFamily(
        "chordflow_tasks_in_flight",
        "Messages delivered to workers and not yet acknowledged (running or reserved; kombu's unacked hash)",
        value=data["unacked"],
    )
    yield GaugeMetricFamily(
        "chordflow_workers_live", "Workers whose announcement has not expired", value=data["workers"]
    )
    yield lat
    yield alerts


class ChordflowCollector:
    """A prometheus_client collector reading chordflow's counters from Redis at each scrape."""

    def __init__(self, client: Any, settings: Any) -> None:
        self.client = client
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        yield from families(read(self.client, self.settings))

    def describe(self) -> list[Any]:
        return []  # no Redis read at registration


def exposition(client: Any, settings: Any) -> bytes:
    """The text exposition format of one scrape."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ChordflowCollector(client, settings))  # type: ignore[arg-type]
    return generate_latest(registry)
