"""Every Redis key chordflow uses, built here and nowhere else.

Key schema (``{rid}`` is the run id; the braces make every key of a run hash
to the same Redis Cluster slot). A run's keys never expire while the run is
active (it is in ``chordflow:active``); they get ``run_ttl_s`` when it ends.

========================================  ======  ==========================================
key                                       type    content
========================================  ======  ==========================================
chordflow:runs                            zset    run_id -> created epoch seconds (recent runs)
chordflow:runs:pipeline:{name}            zset    run_id -> created epoch seconds, runs of one pipeline (the
                                                  runs list filtered by pipeline, the latency heatmap)
chordflow:runs:pipeline-indexed           string  set once the runs made before the per-pipeline indexes existed
                                                  were added to them (orchestrator/aio.py)
chordflow:active                          set     run ids not yet finished (what the lease reaper scans)
chordflow:reaper-lock                     string  held by the one worker reaping this interval (PX)
chordflow:due                             zset    "<rid>|<node>" -> epoch ms (Redis TIME) a retry or re-check is due
chordflow:wake                            pubsub  published when something becomes due (wakes the schedulers)
chordflow:notify                          zset    run_id -> epoch ms its end notification is due (the outbox:
                                                  ZADDed by the ledger in the step that finalizes a run whose
                                                  meta has "notify"; claimed and delivered by workers)
chordflow:notify-wake                     pubsub  published when a notification is enqueued
chordflow:workers                         hash    worker instance -> JSON announcement (name, host, pid, queues,
                                                  tasks, task modules, delivery tags it holds)
chordflow:workers:seen                    zset    worker instance -> epoch ms (Redis TIME) its announcement expires
chordflow:unacked-seen                    hash    kombu delivery tag -> epoch ms the reaper first saw it unacked
chordflow:pipelines                       hash    pipeline name -> published record JSON (plan, params JSON Schema,
                                                  description, source, published_at, hash; see registry.py)
chordflow:metrics                         hash    cluster-wide counters kept as things happen (orchestrator/metrics.py):
                                                  "run|<pipeline>|<state>", "d|<task>|<outcome>|<bucket>",
                                                  "du|<task>|<outcome>" (sum, µs), "retry|<task>",
                                                  "lost|<task>|<reason>", "timeout|<task>|<kind>",
                                                  "l|<op>|<bucket>", "ls|<op>",
                                                  "alert|<kind>"; "slow_on"/"failed_on": epoch ms until which
                                                  the ledger feeds the alert checker (orchestrator/alerts.py)
chordflow:metrics:settled                 stream  successful attempts (t=task, d=seconds, r=run, n=node) while
                                                  slow-task alerts are on; read by the alert checker
chordflow:alerts:lock                     string  held by the one worker checking alert conditions (PX)
chordflow:alerts:state                    hash    the alert checker's memory: "cursor" (last settled entry read),
                                                  "w|<task>" (recent durations, JSON), "q|<queue>" (epoch ms it was
                                                  first seen waiting with no consumer)
chordflow:alerts:samples                  zset    "<ms>:<succeeded>:<failed>" -> epoch ms (failure-rate window)
chordflow:alerts:once:{kind}:{subject}    string  an alert fired (PX = alerts.repeat_s): one per condition per window
chordflow:alert:{id}                      string  a fired alert (JSON: kind, summary, details, at); its outbox member
                                                  in chordflow:notify is "alert:<id>" (EX = run_ttl_s)
chordflow:alert:{id}:notifications        list    delivery attempts of one alert (like a run's)
chordflow:run:{rid}                       hash    run meta: pipeline, state, created/started/finished_at,
                                                  total, remaining, n_<state> counters, dispatched,
                                                  cancel_requested, ttl_s, params, creator (random token
                                                  of the submit that created it, see RunStore.create_small)
chordflow:run:{rid}:nodes                 hash    node -> static node record (JSON: task, queue, up,
                                                  down, rule, params, via, chain)
chordflow:run:{rid}:state                 hash    node -> TaskState
chordflow:run:{rid}:pending               hash    node -> number of parents not yet settled
chordflow:run:{rid}:bad                   hash    node -> number of parents that did not succeed
chordflow:run:{rid}:results               hash    node -> result JSON
chordflow:run:{rid}:attempts              hash    node -> attempts started
chordflow:run:{rid}:times                 hash    "<node>:queued|started|attempt_started|finished" -> epoch s
chordflow:run:{rid}:hosts                 hash    node -> worker hostname of the latest attempt
chordflow:run:{rid}:errors                hash    node -> last error JSON (type, message, traceback tail)
chordflow:run:{rid}:progress              hash    node -> "done/total"
chordflow:run:{rid}:leases                hash    node -> "<token>|<expiry epoch ms>" of the running attempt
chordflow:run:{rid}:attempt_log           list    one JSON line per finished attempt
chordflow:run:{rid}:templates             hash    task name -> Celery message template (see compile.py)
chordflow:run:{rid}:task_ids              hash    node -> Celery task id of the running attempt (for revoke)
chordflow:run:{rid}:lost                  hash    node -> attempts lost with their worker (bounded requeues)
chordflow:run:{rid}:waiting               zset    node -> epoch ms it became queued/retrying (reaper safety net)
chordflow:run:{rid}:notifications         list    one JSON line per notification delivery attempt (not in RunKeys:
                                                  written by workers/notifier.py, with the run's TTL)
chordflow:run:{rid}:events                stream  every state change and progress update, written by the ledger
                                                  in the same atomic step (kind=task|run|progress, node, state,
                                                  progress, at); trimmed to ~EVENTS_MAXLEN
chordflow:run:{rid}:logs:{node}           list    the task's log lines (JSON, masked), newest first, at most
                                                  TASK_LOG_LINES (not in RunKeys: written by workers/log_sink.py
                                                  with the run's TTL; a map's chunks share their map's list)
chordflow:run:{rid}:chunks                hash    "<map>[<i>]" -> state of chunk i of a map node (written once
                                                  dispatched; an absent chunk below the map's total is pending)
chordflow:run:{rid}:chunk_io              hash    "<map>[<i>]:in" -> the chunk's elements (JSON list, split from what
                                                  the map maps over), "<map>[<i>]:out" -> its results (JSON list),
                                                  ":t:<queued|started|...>", ":host", ":attempts" of the chunk
chordflow:run:{rid}:maps                  hash    "<map>:total|width|next|allowed|items|n_<state>" -> counters of a map
chordflow:run:{rid}:map_ready             zset    "<map>|<i, 10 digits>" (score 0, read by lex range): chunks ready
                                                  out of order (map after map, retried) waiting for room in flight
chordflow:run:{rid}:map_inflight          set     chunks queued, running or retrying (what cancel stops)
chordflow:cache-secret-key                string  random HMAC key: secret params enter fingerprints through it
chordflow:cache:{fingerprint}             string  cache entry (JSON: run_id, pipeline, node, task, result, artifacts
                                                  dir, created_at by Redis time); EX = the task's cache_ttl_s
chordflow:cache-last:{pipeline}:{node}    string  JSON {fp, parts, run_id}: the last successful fingerprint of a
                                                  node (what ``--dry-run`` diffs against to say why it runs)
<queue name>                              list    Celery/kombu queue (kombu's own key, not ours)
========================================  ======  ==========================================
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

PREFIX = "chordflow"
RUNS_INDEX = f"{PREFIX}:runs"
ACTIVE_RUNS = f"{PREFIX}:active"
REAPER_LOCK = f"{PREFIX}:reaper-lock"
DUE = f"{PREFIX}:due"
WAKE_CHANNEL = f"{PREFIX}:wake"
NOTIFY = f"{PREFIX}:notify"
NOTIFY_CHANNEL = f"{PREFIX}:notify-wake"
WORKERS = f"{PREFIX}:workers"
WORKERS_SEEN = f"{PREFIX}:workers:seen"
UNACKED_SEEN = f"{PREFIX}:unacked-seen"
PIPELINES = f"{PREFIX}:pipelines"
MAP_READY_DIGITS = 10  #: a chunk index in map_ready is zero-padded so lex order is numeric order (ledger.lua)
EVENTS_MAXLEN = 10_000  #: events kept per run (approximate trim); a client that lags more re-reads the state
CACHE_PREFIX = f"{PREFIX}:cache:"
CACHE_SECRET_KEY = f"{PREFIX}:cache-secret-key"  #: HMAC key of secret params in fingerprints (made once)
CACHE_LAST_PREFIX = f"{PREFIX}:cache-last:"
TASK_LOG_LINES = 500  #: log lines kept per (run, task); older ones are trimmed
METRICS = f"{PREFIX}:metrics"
SETTLED = f"{PREFIX}:metrics:settled"
SETTLED_MAXLEN = 10_000  #: settled attempts kept for the alert checker (approximate trim; ledger.lua)
ALERT_LOCK = f"{PREFIX}:alerts:lock"
ALERT_STATE = f"{PREFIX}:alerts:state"
ALERT_SAMPLES = f"{PREFIX}:alerts:samples"
ALERT_MEMBER = "alert:"  #: outbox members that are alerts, not runs (ledger.lua enqueues "alert:run_failed:<rid>")
KOMBU_UNACKED = "unacked"  #: kombu's Redis transport: delivery tag -> [message, exchange, routing key]


def cache_entry(fingerprint: str) -> str:
    """The cache entry of one fingerprint (a sha256 hex digest)."""
    return f"{CACHE_PREFIX}{fingerprint}"


def cache_last(pipeline: str, node: str) -> str:
    """The last successful fingerprint + parts of ``node`` in ``pipeline``."""
    return f"{CACHE_LAST_PREFIX}{pipeline}:{node}"


PIPELINES_INDEXED = f"{RUNS_INDEX}:pipeline-indexed"


def pipeline_runs(pipeline: str) -> str:
    """The index of one pipeline's runs (same scores as :data:`RUNS_INDEX`)."""
    return f"{RUNS_INDEX}:pipeline:{pipeline}"


def task_logs(run_id: str, node: str) -> str:
    """The log lines of one task of a run; a map chunk ``m[3]`` logs into its map ``m``'s list."""
    return f"{PREFIX}:run:{{{run_id}}}:logs:{node.partition('[')[0]}"


def due_member(run_id: str, node: str) -> str:
    """Member of :data:`DUE` for one node (the ledger builds the same string)."""
    return f"{run_id}|{node}"


def run_notifications(run_id: str) -> str:
    """The run's list of notification delivery attempts (kept out of :class:`RunKeys`: the ledger never
    touches it)."""
    return f"{PREFIX}:run:{{{run_id}}}:notifications"


def alert_once(kind: str, subject: str) -> str:
    """Held while an alert of ``kind`` about ``subject`` may not fire again."""
    return f"{PREFIX}:alerts:once:{kind}:{subject}"


def alert_record(alert_id: str) -> str:
    return f"{PREFIX}:alert:{alert_id}"


def alert_notifications(alert_id: str) -> str:
    return f"{PREFIX}:alert:{alert_id}:notifications"


@dataclass(frozen=True)
class RunKeys:
    """The keys of one run, in the fixed order the ledger script receives them as KEYS."""

    meta: str
    nodes: str
    state: str
    pending: str
    bad: str
    results: str
    attempts: str
    times: str
    hosts: str
    errors: str
    progress: str
    leases: str
    attempt_log: str
    templates: str
    task_ids: str
    lost: str
    waiting: str
    events: str
    chunks: str  #: the map-node keys (C6): chunk states, chunk inputs/outputs, per-map counters, ready, in flight
    chunk_io: str
    maps: str
    map_ready: str
    map_inflight: str
    active_runs: str  #: global, not per run (the ledger never expires the global keys)
    due: str  #: global: retries and re-checks by due time
    notify: str  #: global: the outbox of run-end notifications
    metrics: str  #: global: counters (orchestrator/metrics.py)
    settled: str  #: global: successful attempts for the slow-task alert; always last

    def ordered(self) -> list[str]:
        """KEYS for ``ledger.lua`` (the order is part of the script's contract)."""
        return [getattr(self, name) for name in _RUN_KEY_FIELDS]

    def per_run(self) -> list[str]:
        """The keys owned by this run (everything but the five global keys at the end)."""
        return self.ordered()[:-5]


_RUN_KEY_FIELDS = tuple(f.name for f in fields(RunKeys))


@functools.lru_cache(maxsize=1024)
def run_keys(run_id: str) -> RunKeys:
    """All keys of run ``run_id`` (cached: a worker asks for the same run's keys for every task)."""
    base = f"{PREFIX}:run:{{{run_id}}}"
    return RunKeys(
        meta=base,
        nodes=f"{base}:nodes",
        state=f"{base}:state",
        pending=f"{base}:pending",
        bad=f"{base}:bad",
        results=f"{base}:results",
        attempts=f"{base}:attempts",
        times=f"{base}:times",
        hosts=f"{base}:hosts",
        errors=f"{base}:errors",
        progress=f"{base}:progress",
        leases=f"{base}:leases",
        attempt_log=f"{base}:attempt_log",
        templates=f"{base}:templates",
        task_ids=f"{base}:task_ids",
        lost=f"{base}:lost",
        waiting=f"{base}:waiting",
        events=f"{base}:events",
        chunks=f"{base}:chunks",
        chunk_io=f"{base}:chunk_io",
        maps=f"{base}:maps",
        map_ready=f"{base}:map_ready",
        map_inflight=f"{base}:map_inflight",
        active_runs=ACTIVE_RUNS,
        due=DUE,
        notify=NOTIFY,
        metrics=METRICS,
        settled=SETTLED,
    )
