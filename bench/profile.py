"""Where the time goes: Redis commands per task, split by who sends them, for both systems.

Untimed runs under a MONITOR reader (:class:`bench.common.Monitor`): every command is attributed
to ``lua`` (run inside a chordflow ledger script, no round trip) or to the TCP connection that sent
it, which is mapped to a process (the bench driver = the submitting client, or a worker process)
through ``psutil`` (local port -> pid). One line per command; MONITOR makes everything slower, so
only the counts are used here, never the times. Times and CPU come from the timed scenarios.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from bench import cf_tasks, common
from bench import raw_celery_app as rc

NAME = "profile"
TITLE = "Where the time goes"


def _classify(mon: common.Monitor, owners: dict[str, str], tasks: int) -> dict[str, Any]:
    by_role: Counter[str] = Counter()
    by_cmd: dict[str, Counter[str]] = {}
    trips: Counter[str] = Counter()
    for origin, n in mon.round_trips.items():
        role = owners.get(origin, "other")
        trips[role] += n
        if role.startswith("worker_"):
            trips["worker"] += n
    for (origin, cmd), n in mon.counts.items():
        role = "lua" if origin == "lua" else owners.get(origin, "other")
        if cmd in ("MONITOR", "PING", "INFO", "CLIENT"):
            continue
        roles = [role, "worker"] if role.startswith("worker_") else [role]
        for rl in roles:
            by_role[rl] += n
            by_cmd.setdefault(rl, Counter())[cmd] += n
    return {
        "tasks": tasks,
        "per_task": {k: v / tasks for k, v in by_role.items()},
        "round_trips_per_task": {k: v / tasks for k, v in trips.items()},
        "commands_per_task": {
            role: {c: n / tasks for c, n in cnt.most_common()} for role, cnt in sorted(by_cmd.items())
        },
    }


def _monitored(stack: common.Stack, system: str, fn: Any, tasks: int) -> dict[str, Any]:
    db = 0 if system == "chordflow" else 1
    r = stack.r(db)
    mon = common.Monitor(r).start()
    owners: dict[str, str] = {}
    try:
        fn()
        # connections are pooled and still open: map their local ports to processes now
        pids = stack.worker_pids(system)
        owners = common.port_owners(
            stack.redis.port, {"driver": [os.getpid()], "worker_main": pids[:1], "worker_pool": pids[1:]}
        )
    finally:
        mon.stop(r)
    return _classify(mon, owners, tasks)


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    n = cfg.profile_fanout_n
    w, d = (20, 10)
    out: dict[str, Any] = {"fanout_n": n, "layered": f"{w}x{d}", "chain_n": 50}
    out["chordflow_fanout"] = _monitored(stack, "chordflow", lambda: common.cf_run(stack, cf_tasks.fanout(n)), n)
    out["raw_fanout"] = _monitored(stack, "raw", lambda: common.raw_run(stack, rc.fanout(n), n), n)
    out["chordflow_chain"] = _monitored(stack, "chordflow", lambda: common.cf_run(stack, cf_tasks.chain(50)), 50)
    out["raw_chain"] = _monitored(stack, "raw", lambda: common.raw_run(stack, rc.chain_of(50), 50), 50)
    out["chordflow_layered"] = _monitored(
        stack, "chordflow", lambda: common.cf_run(stack, cf_tasks.layered(w, d)), w * d
    )
    t = rc.layered_task_count(w, d, "nested")
    out["raw_layered_nested"] = _monitored(
        stack, "raw", lambda: common.raw_run(stack, rc.layered_nested_chords(w, d), t), t
    )
    out["rtt"] = common.round_trip_floor(stack.r(0))
    common.log(f"profile: {out['rtt']}")
    out["sensitivity"] = _sensitivity(stack, cfg)
    return out


VARIANTS = {
    "defaults (as in the scenarios)": {},
    "artifacts off": {"CHORDFLOW_WRITE_ARTIFACTS": "false"},
    "artifacts off + log level WARNING": {"CHORDFLOW_WRITE_ARTIFACTS": "false", "CHORDFLOW_LOG_LEVEL": "WARNING"},
    "defaults + prefetch multiplier 4": {"CHORDFLOW_PREFETCH_MULTIPLIER": "4"},
}


def _sensitivity(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    """chordflow fan-out under other worker settings (never used for the targets). Runs last: it
    replaces the chordflow worker, and puts the default one back at the end."""
    n = cfg.sensitivity_n
    pipeline = cf_tasks.fanout(n)
    out: dict[str, Any] = {"n": n}
    try:
        for label, env in VARIANTS.items():
            stack.restart_cf_worker(env)
            s = common.Samples()
            runs = []
            for _ in range(cfg.sensitivity_repeat):
                run = common.cf_run(stack, pipeline)
                runs.append(run)
                s.add(e2e_s=run["e2e_s"], tasks_per_s=n / run["e2e_s"])
            out[label] = {"env": env, **s.summaries(), "cpu_ms_per_task": common.cpu_per_task(runs)}
            common.log(f"sensitivity {label}: {n / s.summaries()['e2e_s']['median']:.0f} tasks/s")
    finally:
        stack.restart_cf_worker({})
    return out
