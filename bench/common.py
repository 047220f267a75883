"""Shared machinery of ``make bench``: a private Redis, the two kinds of Celery workers, timers,
summaries, ``INFO commandstats`` diffs, a MONITOR reader and machine info.

Both systems run against ONE private ``redis-server`` started here with
:class:`orchestrator.embedded.RedisServer` and ``appendonly=False`` (no AOF, no RDB saves), so
neither pays for persistence. chordflow uses db 0, raw Celery db 1 (broker and result backend).
The machine's shared Redis on 6379 is never used.

Workers: one chordflow worker (``celery -A workers.app worker``, started through
:class:`orchestrator.embedded.WorkerProcess`) and one raw Celery worker
(``celery -A bench.raw_celery_app worker``) with the same command-line flags and the same app
settings. Both stay up for the whole Celery phase; the one not being measured sits idle on BRPOP.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import redis
from pydantic import SecretStr

from bench.instruments import Monitor, QueueSampler, port_owners, round_trip_floor  # noqa: F401 (re-exported)
from orchestrator.embedded import RedisServer, WorkerProcess, die_with_parent, terminate_group
from orchestrator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
CF_QUEUE = "chordflow"
RAW_QUEUE = "raw"
CONCURRENCY = 2
WORKER_FLAGS = ["--without-gossip", "--without-mingle", "--without-heartbeat"]


# ----------------------------------------------------------------------------------------------
# configuration of one bench run


@dataclass
class Config:
    quick: bool = False
    repeat: int = 5
    fanout_n: int = 10_000
    chain_n: int = 200
    layered_width: int = 100
    layered_depth: int = 10
    exact_slow_s: float = 2.0
    exact_chain_n: int = 20
    exact_short_s: float = 0.05
    scale_sizes: tuple[int, ...] = (10, 1_000, 10_000, 100_000)
    scale_repeat: int = 5  #: repetitions per scale size (the largest size runs once)
    profile_fanout_n: int = 1_000
    sensitivity_n: int = 5_000
    sensitivity_repeat: int = 3
    job_n: int = 200  #: one-task jobs per repetition (job latency)

    @classmethod
    def make(cls, quick: bool, repeat: int | None) -> Config:
        if quick:
            c = cls(
                quick=True,
                repeat=2,
                fanout_n=1_000,
                chain_n=50,
                layered_width=20,
                layered_depth=10,
                exact_slow_s=1.0,
                exact_chain_n=20,
                exact_short_s=0.025,
                scale_sizes=(10, 1_000, 10_000),
                scale_repeat=1,
                profile_fanout_n=300,
                sensitivity_n=300,
                sensitivity_repeat=1,
                job_n=40,
            )
        else:
            c = cls()
        if repeat is not None:
            c.repeat = repeat
            c.scale_repeat = min(repeat, c.scale_repeat) if quick else repeat
        return c


# ----------------------------------------------------------------------------------------------
# processes


# Same child policy as chordflow's embedded mode: own process group, SIGKILL when we die.
_die_with_parent = die_with_parent


def terminate(proc: subprocess.Popen[Any] | None, grace_s: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL what is left (orchestrator.embedded's policy)."""
    terminate_group(proc, grace_s=grace_s)


class RawWorker:
    """``celery -A bench.raw_celery_app worker`` with exactly chordflow's worker flags."""

    def __init__(self, url: str, log_path: Path) -> None:
        self.url = url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RawWorker:
        env = dict(os.environ)
        env["BENCH_RAW_URL"] = self.url
        env["C_FORCE_ROOT"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        cmd = [
            sys.executable, "-m", "celery", "-A", "bench.raw_celery_app", "worker",
            "--loglevel", "WARNING", "-c", str(CONCURRENCY), "-Q", RAW_QUEUE,
            "-n", "raw@%h", *WORKER_FLAGS,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


class Stack:
    """Private Redis + one chordflow worker + one raw Celery worker; stops everything on exit."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="chordflow-bench-"))
        self.redis = RedisServer(self.tmp / "redis", appendonly=False)
        self.artifacts = self.tmp / "artifacts"
        self.cf_worker: WorkerProcess | None = None
        self.raw_worker: RawWorker | None = None
        self._client: Any = None

    # urls and clients
    @property
    def cf_url(self) -> str:
        return self.redis.url  # db 0

    @property
    def raw_url(self) -> str:
        return self.redis.url[: -len("/0")] + "/1"

    def r(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis.port, password=self.redis.password, db=db)

    def settings(self) -> Settings:
        return Settings(
            redis_url=SecretStr(self.cf_url),
            artifact_root=self.artifacts,
            task_modules=["bench.cf_tasks"],
            allowed_task_prefixes=["bench."],
            task_events=False,
            use_cache=False,  # every scenario measures execution; bench/cache.py turns the cache on
        )

    def cf_client(self) -> Any:
        if self._client is None:
            from orchestrator.client import Client

            self._client = Client(self.settings())
        return self._client

    def cf_worker_env(self) -> dict[str, str]:
        return {
            "CHORDFLOW_TASK_MODULES": "bench.cf_tasks",
            "CHORDFLOW_ALLOWED_TASK_PREFIXES": "bench.",
            "CHORDFLOW_ARTIFACT_ROOT": str(self.artifacts),
            "CHORDFLOW_TASK_EVENTS": "false",
            "C_FORCE_ROOT": "1",
        }

    # lifecycle
    def start(self) -> Stack:
        self.redis.start()
        assert self.redis.port != 6379
        return self

    def start_workers(self) -> None:
        self._start_cf_worker({})
        self.raw_worker = RawWorker(self.raw_url, self.tmp / "logs" / "raw-worker.log").start()
        self.warm_cf()
        self.warm_raw()

    def _start_cf_worker(self, overrides: dict[str, str]) -> None:
        self.cf_worker = WorkerProcess(
            self.cf_url,
            "cf@%h",
            concurrency=CONCURRENCY,
            queues=[CF_QUEUE],
            log_path=self.tmp / "logs" / "cf-worker.log",
            extra_env={**self.cf_worker_env(), **overrides},
            cwd=REPO,
        ).start()

    def restart_cf_worker(self, overrides: dict[str, str]) -> None:
        """Replace the chordflow worker by one with extra ``CHORDFLOW_*`` settings (sensitivity runs)."""
        if self.cf_worker is not None:
            self.cf_worker.stop()
        self._start_cf_worker(overrides)
        self.warm_cf()

    def warm_cf(self) -> None:
        """A small run: proves the chordflow worker consumes and warms its processes."""
        from bench import cf_tasks

        client = self.cf_client()
        p = cf_tasks.fanout(20)
        deadline = time.monotonic() + 90
        run_id = client.submit(p)
        while True:
            snap = client.wait(run_id, timeout_s=2, poll_s=0.05, detail=False)
            if snap.finished:
                break
            if not (self.cf_worker and self.cf_worker.alive) or time.monotonic() > deadline:
                raise RuntimeError(f"chordflow worker did not come up; see {self.tmp / 'logs' / 'cf-worker.log'}")
        if snap.state != "succeeded":
            raise RuntimeError(f"chordflow warm-up run ended {snap.state}")
        self.clean_artifacts()

    def warm_raw(self) -> None:
        """A small group: proves the raw Celery worker consumes and warms its processes."""
        from bench import raw_celery_app

        raw_celery_app.configure(self.raw_url)
        from celery import group

        res = group(raw_celery_app.noop.s() for _ in range(20)).apply_async()
        try:
            res.get(timeout=90)
        except Exception as exc:
            where = self.tmp / "logs" / "raw-worker.log"
            raise RuntimeError(f"raw Celery worker did not come up; see {where}") from exc
        self.raw_cleanup()

    def check_workers(self) -> None:
        if self.cf_worker is not None and not self.cf_worker.alive:
            raise RuntimeError(f"chordflow worker died; see {self.tmp / 'logs' / 'cf-worker.log'}")
        if self.raw_worker is not None and not self.raw_worker.alive:
            raise RuntimeError(f"raw worker died; see {self.tmp / 'logs' / 'raw-worker.log'}")

    def worker_pids(self, which: str) -> list[int]:
        w = self.cf_worker if which == "chordflow" else self.raw_worker
        if w is None or w.proc is None:
            return []
        try:
            p = psutil.Process(w.proc.pid)
            return [p.pid] + [c.pid for c in p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop_workers(self) -> None:
        for w in (self.cf_worker, self.raw_worker):
            if w is not None:
                w.stop()
        self.cf_worker = self.raw_worker = None

    def close(self) -> None:
        try:
            self.stop_workers()
        finally:
            self.redis.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # housekeeping between repetitions (never timed)
    def raw_cleanup(self) -> int:
        """Delete raw Celery's result keys (db 1) so every repetition starts alike; kombu's keys stay."""
        r = self.r(1)
        n = 0
        batch: list[bytes] = []
        for key in r.scan_iter(match="celery-task*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                n += r.delete(*batch)
                batch = []
        if batch:
            n += r.delete(*batch)
        return n

    def clean_artifacts(self) -> None:
        """chordflow writes result.json + metadata.json per task (the default); remove them between runs."""
        if self.artifacts.exists():
            for child in self.artifacts.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# timing and summaries


def now() -> float:
    return time.perf_counter()


def summary(values: Iterable[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0}
    return {
        "n": len(vals),
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "values": vals,
    }


def fmt(s: dict[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    """``median (min–max)`` of a summary; ``–`` when absent."""
    if not s or not s.get("n"):
        return "–"

    def f(v: float) -> str:
        v = v * scale
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits - len(str(int(abs(v)))), 0)}f}"

    if s["n"] == 1:
        return f"{f(s['median'])} (n=1)"
    return f"{f(s['median'])} ({f(s['min'])}–{f(s['max'])})"


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not a.get("n") or not b.get("n") or not b["median"]:
        return None
    return a["median"] / b["median"]


# ----------------------------------------------------------------------------------------------
# Redis instrumentation


def commandstats(r: redis.Redis) -> dict[str, Any]:
    """Calls per command plus the server's CPU seconds, for a before/after diff."""
    stats = r.info("commandstats")
    cpu = r.info("cpu")
    return {
        "calls": {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()},
        "usec": {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in stats.items()},
        "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    }


def commandstats_diff(before: dict[str, Any], after: dict[str, Any], tasks: int) -> dict[str, Any]:
    """Per-task command counts (Lua-internal commands included: Redis counts them too) and Redis CPU."""
    calls = {
        k: after["calls"][k] - before["calls"].get(k, 0)
        for k in after["calls"]
        if after["calls"][k] - before["calls"].get(k, 0) > 0
    }
    for k in ("info", "commandstats"):
        calls.pop(k, None)
    total = sum(calls.values())
    usec = {k: after["usec"][k] - before["usec"].get(k, 0) for k in calls}
    return {
        "tasks": tasks,
        "usec": usec,
        "calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "calls_per_task": {k: v / tasks for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
        "total_per_task": total / tasks,
        "redis_cpu_us_per_task": (after["cpu_s"] - before["cpu_s"]) * 1e6 / tasks,
    }


def merge_cmdstats(diffs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of several commandstats diffs (all repetitions of one system), re-normalised per task."""
    tasks = sum(d["tasks"] for d in diffs)
    calls: Counter[str] = Counter()
    usec: Counter[str] = Counter()
    cpu_us = 0.0
    for d in diffs:
        calls.update(d["calls"])
        usec.update(d.get("usec", {}))
        cpu_us += d["redis_cpu_us_per_task"] * d["tasks"]
    total = sum(calls.values())
    return {
        "tasks": tasks,
        "calls_per_task": {k: v / tasks for k, v in calls.most_common()},
        "usec_per_task": {k: v / tasks for k, v in usec.most_common()},
        "total_per_task": total / tasks if tasks else 0,
        "redis_cpu_us_per_task": cpu_us / tasks if tasks else 0,
    }


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])



# ----------------------------------------------------------------------------------------------
# machine


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def code_state() -> dict[str, Any]:
    """The commit under test and whether chordflow's code differs from it (uncommitted edits)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            ).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "orchestrator", "workers")
    diff = git("diff", "HEAD", "--", "orchestrator", "workers")
    return {
        "diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else "",
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "subject": git("log", "-1", "--format=%s").strip(),
        "uncommitted_chordflow_files": [line[3:] for line in dirty.splitlines() if line.strip()],
    }


def machine_info(r: redis.Redis | None = None) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(),
        "cpu_model": cpu_model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": {
            d: _version(d) for d in ("celery", "kombu", "redis", "hiredis", "billiard", "dask", "distributed")
        },
    }
    info["code"] = code_state()
    if r is not None:
        srv = r.info("server")
        mem = r.info("memory")
        info["redis_server"] = {
            "version": srv.get("valkey_version") or srv.get("redis_version"),
            "server": "valkey-server" if srv.get("valkey_version") else "redis-server",
            "malloc": mem.get("mem_allocator"),
            "persistence": 'appendonly no, save "" (no AOF, no RDB)',
        }
    return info


def calibrate() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): shows how fast this shared VM was."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        x = 0
        for i in range(1_000_000):
            x += i & 7
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def cpu_jiffies() -> dict[str, int]:
    """Machine-wide CPU time counters from /proc/stat (USER_HZ ticks): busy, idle, steal."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in fields]
    return {"idle": v[3] + v[4], "steal": v[7] if len(v) > 7 else 0, "total": sum(v[:8])}


class CpuWatch:
    """CPU seconds used by a set of processes between start() and stop() (driver, workers...)."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.start_times: dict[str, float] = {}

    @staticmethod
    def _cpu(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def start(self) -> CpuWatch:
        self.start_times = {k: self._cpu(v) for k, v in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        return {k: self._cpu(v) - self.start_times[k] for k, v in self.pids.items()}


@dataclass
class Samples:
    """Collects repeated measurements by metric name."""

    data: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **kv: float) -> None:
        for k, v in kv.items():
            self.data.setdefault(k, []).append(float(v))

    def summaries(self) -> dict[str, Any]:
        return {k: summary(v) for k, v in self.data.items()}


# ----------------------------------------------------------------------------------------------
# one timed run of each system


def roles(stack: Stack, system: str) -> dict[str, list[int]]:
    """Processes whose CPU is counted: the driver (this process), the worker's main process, its pool
    processes, and redis-server."""
    pids = stack.worker_pids(system)
    return {
        "driver": [os.getpid()],
        "worker_main": pids[:1],
        "worker_pool": pids[1:],
        "redis": [stack.redis.proc.pid] if stack.redis.proc else [],
    }


def cf_run(stack: Stack, pipeline: Any, timeout_s: float = 3600, sampler_queue: bool = False) -> dict[str, Any]:
    """Submit ``pipeline`` to chordflow and wait for its terminal state.

    submit_s = ``Client.submit`` (validate, plan, compile, one MULTI/EXEC, dispatch of the roots);
    e2e_s = run meta ``finished_at`` (Redis clock, set by the ledger when the last node settles)
    minus the wall time just before submit; collect_s = one ``Client.results`` afterwards (not in e2e).
    """
    client = stack.cf_client()
    r = stack.r(0)
    n = len(pipeline.nodes)
    cpu = CpuWatch(roles(stack, "chordflow")).start()
    before = commandstats(r)
    t0w = time.time()
    t0 = now()
    run_id = client.submit(pipeline)
    submit = now() - t0
    snap = client.wait(run_id, timeout_s=timeout_s, poll_s=0.02, detail=False)
    wall = now() - t0
    after = commandstats(r)
    cpu_s = cpu.stop()
    if not snap.finished:
        raise RuntimeError(f"chordflow run {run_id} still {snap.state} after {timeout_s}s")
    if snap.state != "succeeded" or snap.counts().get("succeeded") != n:
        raise RuntimeError(f"chordflow run {run_id} ended {snap.state} with {snap.counts()} (expected {n} succeeded)")
    e2e = float(snap.meta["finished_at"]) - t0w
    t1 = now()
    results = client.results(run_id)
    collect = now() - t1
    if len(results) != n:
        raise RuntimeError(f"chordflow run {run_id}: {len(results)} results for {n} nodes")
    stack.clean_artifacts()
    stack.check_workers()
    return {
        "run_id": run_id,
        "submit_s": submit,
        "e2e_s": e2e,
        "wall_s": wall,
        "collect_s": collect,
        "cmd": commandstats_diff(before, after, n),
        "cpu_s": cpu_s,
        "tasks": n,
    }


def ledger_timing(stack: Stack, run_id: str) -> dict[str, float] | None:
    """From the ledger's own timestamps (Redis clock): how long each attempt held its claim
    (``attempt_started`` -> ``finished``: the task function, artifacts, logging and the succeed call),
    and how often each pool process completed a task (slot cycle = concurrency x span / tasks)."""
    from orchestrator.keys import run_keys

    t = {k.decode(): float(v) for k, v in stack.r(0).hgetall(run_keys(run_id).times).items()}
    starts, fins, inside = [], [], []
    for key, v in t.items():
        if key.endswith(":attempt_started"):
            fin = t.get(key[: -len(":attempt_started")] + ":finished")
            if fin is not None:
                starts.append(v)
                fins.append(fin)
                inside.append(fin - v)
    if not inside:
        return None
    span = max(fins) - min(starts)
    return {
        "claim_ms": statistics.mean(inside) * 1e3,
        "slot_cycle_ms": CONCURRENCY * span * 1e3 / len(inside),
    }


def raw_run(stack: Stack, sig: Any, tasks: int, check: Any = None, timeout_s: float = 3600) -> dict[str, Any]:
    """``sig.apply_async()`` (timed as submit_s) then ``.get()`` of the final result (e2e_s)."""
    r = stack.r(1)
    cpu = CpuWatch(roles(stack, "raw")).start()
    before = commandstats(r)
    t0 = now()
    res = sig.apply_async()
    submit = now() - t0
    value = res.get(timeout=timeout_s, disable_sync_subtasks=False)
    e2e = now() - t0
    after = commandstats(r)
    cpu_s = cpu.stop()
    if check is not None and not check(value):
        raise RuntimeError(f"raw Celery returned an unexpected value: {str(value)[:200]}")
    del res
    stack.raw_cleanup()
    stack.check_workers()
    return {
        "submit_s": submit,
        "e2e_s": e2e,
        "cmd": commandstats_diff(before, after, tasks),
        "cpu_s": cpu_s,
        "tasks": tasks,
    }


def executed(stack: Stack) -> dict[str, dict[str, int]]:
    """Tasks executed so far by each worker, per task name (``celery inspect stats`` -> total)."""
    from bench import raw_celery_app

    out: dict[str, dict[str, int]] = {}
    host = socket.gethostname()
    for system, app, node in (
        ("chordflow", stack.cf_client().app, f"cf@{host}"),
        ("raw", raw_celery_app.app, f"raw@{host}"),
    ):
        stats = app.control.inspect(timeout=5, destination=[node], limit=1).stats() or {}
        total: Counter[str] = Counter()
        for s in stats.values():
            total.update(s.get("total", {}))
        out[system] = dict(total)
    return out


def executed_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {
        system: {k: v - before.get(system, {}).get(k, 0) for k, v in after[system].items()
                 if v - before.get(system, {}).get(k, 0)}
        for system in after
    }  # fmt: skip


def alternate(rep: int, systems: list[str]) -> list[str]:
    """Alternate the order of the systems between repetitions (no system always goes first)."""
    return systems if rep % 2 == 0 else list(reversed(systems))


def cpu_per_task(runs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU milliseconds per task by role (driver, worker, redis), over several runs."""
    tasks = sum(r["tasks"] for r in runs)
    out: Counter[str] = Counter()
    for r in runs:
        out.update(r["cpu_s"])
    res = {k: v * 1e3 / tasks for k, v in out.items()}
    res["worker"] = res.get("worker_main", 0.0) + res.get("worker_pool", 0.0)
    return res


def status(ok: bool | None) -> str:
    return "–" if ok is None else ("**PASS**" if ok else "**FAIL**")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def scenario_result(stack: Any, ex0: dict[str, Any], samples: dict[str, Any], runs: dict[str, list[Any]],
                    **extra: Any) -> dict[str, Any]:  # fmt: skip
    """What every Celery-side scenario reports: its parameters, executions, summaries, commands and CPU."""
    return {
        **extra,
        "executed": executed_delta(ex0, executed(stack)),
        **{k: v.summaries() for k, v in samples.items()},
        "cmdstats": {k: merge_cmdstats([r["cmd"] for r in v]) for k, v in runs.items()},
        "cpu_ms_per_task": {k: cpu_per_task(v) for k, v in runs.items()},
    }
