"""``make bench``: chordflow vs raw Celery (and Dask) on this machine, in one run.

    python -m bench.run [--quick] [--repeat N] [--no-dask]
                        [--only fanout,chain,layered,exactness,scale,map,job_latency,cache,profile]

Phase 1 starts a private Redis (no persistence) plus one chordflow worker and one raw Celery
worker (prefork, concurrency 2, identical settings) and runs every selected scenario, alternating
the order of the systems between repetitions. Phase 2 stops them and runs the same shapes on a
Dask LocalCluster (2 worker processes). Every process is stopped at the end, also on Ctrl-C.

Full mode writes ``BENCHMARKS.md`` and ``bench/results/latest.json``; ``--quick`` (small sizes,
2 repetitions, < 2 minutes) writes ``bench/results/quick.json`` only; ``--only`` writes
``bench/results/tmp/only-<names>.json`` only.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import cache, chain, common, exactness, fanout, job_latency, layered, profile, scale
from bench import map as map_scenario

SCENARIOS: list[ModuleType] = [fanout, chain, layered, exactness, scale, map_scenario, job_latency, cache, profile]
BY_NAME = {m.NAME: m for m in SCENARIOS}
ANALYSIS = Path(__file__).with_name("analysis.md")


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 repetitions, < 2 minutes")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions per scenario (default 5, quick 2)")
    ap.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(BY_NAME))
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask peer column")
    ap.add_argument("--render", metavar="JSON", help="measure nothing: print the report of a saved results file")
    ap.add_argument(
        "--write", action="store_true", help="with --render of a full run's JSON: (re)write BENCHMARKS.md from it"
    )
    args = ap.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        ap.error("--repeat must be >= 1")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; choose from {list(BY_NAME)}")
    args.names = names or list(BY_NAME)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text(encoding="utf-8"))
        cfg = common.Config(**{**saved["config"], "scale_sizes": tuple(saved["config"]["scale_sizes"])})
        mods = [m for m in SCENARIOS if m.NAME in saved["scenarios"]]
        md = render(saved, cfg, mods)[0]
        if args.write:
            if cfg.quick or len(mods) != len(SCENARIOS):
                sys.exit("--write needs the JSON of a full run of every scenario")
            (common.REPO / "BENCHMARKS.md").write_text(md, encoding="utf-8")
            common.log(f"wrote BENCHMARKS.md from {args.render}")
        else:
            print(md)
        return 0
    cfg = common.Config.make(args.quick, args.repeat)
    selected = [m for m in SCENARIOS if m.NAME in args.names]  # fixed order: profile last
    argv_list = sys.argv[1:] if argv is None else argv
    command = "python -m bench.run" + (" " + shlex.join(argv_list) if argv_list else "")
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    results: dict[str, Any] = {"command": command, "config": cfg.__dict__, "scenarios": {}, "calibration_ms": []}
    jiffies0 = common.cpu_jiffies()
    common.log(f"{command}: scenarios {args.names}, repeat {cfg.repeat}, quick={cfg.quick}")

    # ---- phase 1: Celery (chordflow and raw), one private Redis ---------------------------------
    stack = common.Stack()
    ok = False
    try:
        stack.start()
        results["machine"] = common.machine_info(stack.r(0))
        stack.start_workers()
        common.log(f"Redis on 127.0.0.1:{stack.redis.port} (no persistence), workers up")
        results["idle_redis_cmds_per_s"] = _idle_rate(stack)
        for mod in selected:
            t0 = time.monotonic()
            results["calibration_ms"].append(common.calibrate())
            common.log(f"== {mod.NAME} (calibration loop {results['calibration_ms'][-1]:.0f} ms)")
            results["scenarios"][mod.NAME] = mod.measure_celery(stack, cfg)
            results["scenarios"][mod.NAME]["elapsed_s"] = time.monotonic() - t0
        ok = True
    finally:
        if not ok:  # keep what was measured before the failure
            partial = common.RESULTS_DIR / "tmp" / "partial.json"
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
            common.log(f"aborted; measurements so far in {partial.relative_to(common.REPO)}")
        gc.collect()  # drop raw Celery AsyncResults while their Redis is still up
        from bench import raw_celery_app

        raw_celery_app.forget_results()
        stack.close()
        common.log("Celery phase done; Redis and workers stopped")

    # ---- phase 2: Dask peer -----------------------------------------------------------------------
    with_dask = [m for m in selected if hasattr(m, "measure_dask")]
    if with_dask and not args.no_dask:
        from bench import dask_peer

        with dask_peer.cluster(common.CONCURRENCY) as client:
            common.log("Dask LocalCluster up (2 workers x 1 thread)")
            for mod in with_dask:
                common.log(f"== dask {mod.NAME}")
                results["scenarios"][mod.NAME]["dask"] = mod.measure_dask(client, cfg)
        common.log("Dask phase done; cluster closed")

    results["calibration_ms"].append(common.calibrate())
    jiffies1 = common.cpu_jiffies()
    busy = jiffies1["total"] - jiffies0["total"]
    results["steal_pct"] = 100.0 * (jiffies1["steal"] - jiffies0["steal"]) / busy if busy else 0.0
    results["elapsed_s"] = time.monotonic() - started
    md, checks = render(results, cfg, selected)
    results["checks"] = checks
    (common.RESULTS_DIR / "tmp").mkdir(parents=True, exist_ok=True)
    if args.quick:
        out = common.RESULTS_DIR / "quick.json"
    elif len(selected) != len(SCENARIOS):
        out = common.RESULTS_DIR / "tmp" / f"only-{'-'.join(m.NAME for m in selected)}.json"
    else:
        out = common.RESULTS_DIR / "latest.json"
        (common.REPO / "BENCHMARKS.md").write_text(md, encoding="utf-8")
        common.log("wrote BENCHMARKS.md")
    out.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    common.log(f"wrote {out.relative_to(common.REPO)} in {results['elapsed_s']:.0f}s")
    print()
    print(summary_table(checks))
    return 0


def _idle_rate(stack: common.Stack, seconds: float = 3.0) -> float:
    """Commands per second Redis sees with both workers idle (their BRPOP polling etc.)."""
    r = stack.r(0)
    a = common.commandstats(r)
    time.sleep(seconds)
    b = common.commandstats(r)
    return (sum(b["calls"].values()) - sum(a["calls"].values()) - 2) / seconds


# ---- report ------------------------------------------------------------------------------------


def summary_table(checks: list[dict[str, Any]]) -> str:
    lines = ["| scenario | target | measured | result |", "|---|---|---|---|"]
    for c in checks:
        v = c["value"]
        if isinstance(v, float):
            v = f"{v:.3f}"
        lines.append(
            f"| {c['scenario']} | {c['target']} | {v if v is not None else '–'} | {common.status(c['pass'])} |"
        )
    return "\n".join(lines)


def render(results: dict[str, Any], cfg: common.Config, selected: list[ModuleType]) -> tuple[str, list[dict[str, Any]]]:
    m = results.get("machine", {})
    sc = results["scenarios"]
    body: list[str] = []
    checks: list[dict[str, Any]] = []
    for mod in selected:
        if mod is profile or mod.NAME not in sc:
            continue
        md, ch = mod.report(sc[mod.NAME], cfg)
        body.append(md)
        checks += ch
    pk = m.get("packages", {})
    rs = m.get("redis_server", {})
    head = [
        "# Benchmarks: chordflow vs raw Celery (and Dask)",
        "",
        "Generated by `make bench`; do not edit by hand (re-run it). Hand-written analysis lives in "
        "`bench/analysis.md` and is included at the end.",
        "",
        "## Command",
        "",
        "```",
        f"make bench        # = .venv/bin/{results['command']}",
        "```",
        "",
        f"Whole run: {results['elapsed_s'] / 60:.1f} min; every number below was measured in this run "
        f"(medians of {cfg.repeat} repetitions, min–max in brackets, unless n is given).",
        "",
        "## Machine",
        "",
        f"* {m.get('date')} on `{m.get('host')}`: {m.get('cpu_model')}, {m.get('cpu_count')} cores, "
        f"{m.get('mem_total_gib')} GiB RAM, Linux {m.get('kernel')}, load average at start "
        f"{m.get('loadavg_at_start')}",
        f"* Python {m.get('python')}; celery {pk.get('celery')}, kombu {pk.get('kombu')}, billiard "
        f"{pk.get('billiard')}, redis-py {pk.get('redis')} + hiredis {pk.get('hiredis')}, dask/distributed "
        f"{pk.get('dask')}/{pk.get('distributed')}",
        f"* {rs.get('server', 'redis-server')} {rs.get('version')} (orchestrator.embedded.find_redis_server(), "
        f"allocator {rs.get('malloc')}), "
        f"private, loopback, {rs.get('persistence')}; the machine's shared Redis on 6379 is never used",
        _code_line(m.get("code") or {}),
        _noise_line(results),
        "",
        "## Method",
        "",
        "* **One private Redis** for both systems, started by `bench/common.py` with "
        "`orchestrator.embedded.RedisServer(appendonly=False)`: no AOF and no RDB for chordflow *and* raw "
        "Celery. chordflow uses db 0; raw Celery db 1 as broker and result backend.",
        "* **Identical workers**: `celery ... worker --loglevel WARNING -c 2` (prefork) "
        "`--without-gossip --without-mingle --without-heartbeat`; chordflow's is `-A workers.app` started "
        "by `orchestrator.embedded.WorkerProcess`, raw's is `-A bench.raw_celery_app` whose conf copies "
        "`workers/app.py:create_app` (json only, `task_acks_late`, `task_reject_on_worker_lost`, "
        "`worker_prefetch_multiplier=1`, task events off, same visibility timeout). Task events are off for "
        "both (`CHORDFLOW_TASK_EVENTS=false`). Both workers stay up for the whole Celery phase; the one not "
        f"being measured idles (Redis sees {results.get('idle_redis_cmds_per_s', 0):.1f} commands/s from the "
        "two idle workers). The order of the systems alternates between repetitions.",
        "* **chordflow defaults kept**: artifacts ON (`result.json` + `metadata.json` per task, into a temp "
        "`CHORDFLOW_ARTIFACT_ROOT`, deleted between repetitions, untimed), worker log level from "
        "`config/dev.toml` (INFO: two JSON log lines per task), `max_chain=8`, run TTL 7 days.",
        "* **Results kept**: raw Celery stores every result in its Redis result backend and the driver collects "
        "them (`.get()`); chordflow stores every result in the run's results hash (reading them back is "
        "timed separately). Raw result keys are deleted between repetitions (untimed).",
        "* **Timing**: pipelines/canvases are built before the clock starts. *submission* = `Client.submit` "
        "(validate, plan, compile, one MULTI/EXEC, dispatch of the roots) vs `canvas.apply_async()`. "
        "*end to end* = from just before submit to the run's `finished_at` (set by the ledger when the last "
        "node settles; the client polls every 20 ms) vs until `.get()` of the final result returns.",
        "* **Dask**: `LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`, run after the Celery "
        "phase with no Celery process or Redis alive; exact DAGs as futures.",
        "* Executions are verified with `celery inspect stats` (tasks executed per task name) and chordflow "
        "runs must end `succeeded` with every node succeeded and every result present.",
        "",
        "## Targets",
        "",
        summary_table(checks),
        "",
        "## Scenarios",
        "",
    ]
    tail = [_where_time_goes(results, cfg)]
    if ANALYSIS.exists():
        tail += ["## Analysis (hand-written, bench/analysis.md)", "", ANALYSIS.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(head + body + tail) + "\n", checks


def _noise_line(results: dict[str, Any]) -> str:
    cal = results.get("calibration_ms") or []
    if not cal:
        return "* machine speed: not recorded"
    return (
        f"* machine speed during the run: a fixed pure-Python loop took {min(cal):.0f}–{max(cal):.0f} ms "
        f"(measured {len(cal)} times, before each scenario and at the end); CPU steal reported by the kernel "
        f"{results.get('steal_pct', 0):.1f} %. The VM is shared: compare ratios within this run, not absolute "
        "numbers across runs"
    )


def _code_line(code: dict[str, Any]) -> str:
    dirty = code.get("uncommitted_chordflow_files") or []
    state = (
        "with uncommitted changes to " + ", ".join(f"`{f}`" for f in dirty) + " (the working tree was measured)"
        if dirty
        else "clean"
    )
    return f"* code under test: commit `{code.get('commit')}` ({code.get('subject')}), {state}"


def _where_time_goes(results: dict[str, Any], cfg: common.Config) -> str:
    sc = results["scenarios"]
    lines = ["## Where the time goes", ""]
    prof = sc.get("profile")
    rtt = (prof or {}).get("rtt")
    if rtt:
        lines += [
            f"**Redis round-trip floor** (from the bench driver to the bench Redis, in this run): unpipelined "
            f"redis-py `INCR` {rtt['unpipelined_us_median']:.0f} µs median; bare-socket `PING` "
            f"{rtt['socket_ping_us_median']:.0f} µs; pipelined ×100 {rtt['pipelined_us_per_op']:.1f} µs per command.",
            "",
        ]
    if prof:
        lines += [
            "**Redis commands per task, by sender** (untimed runs under MONITOR; *driver* = the submitting "
            "client, *worker* = the Celery worker processes, *Lua* = commands executed inside chordflow's "
            "ledger script, i.e. no round trip):",
            "",
            "| run | tasks | driver: round trips (commands) per task | worker main process: round trips "
            "(commands) | worker pool processes: round trips (commands) | Lua-internal commands/task | "
            "worker commands per task |",
            "|---|---|---|---|---|---|---|",
        ]
        labels = {
            "chordflow_fanout": f"chordflow fan-out {prof['fanout_n']}",
            "raw_fanout": f"raw Celery group {prof['fanout_n']}",
            "chordflow_chain": f"chordflow chain {prof['chain_n']}",
            "raw_chain": f"raw Celery chain {prof['chain_n']}",
            "chordflow_layered": f"chordflow layered {prof['layered']}",
            "raw_layered_nested": f"raw Celery nested chords {prof['layered']}",
        }
        for key, label in labels.items():
            p = prof.get(key)
            if not p:
                continue
            pt, rt = p["per_task"], p.get("round_trips_per_task", {})
            wc = p["commands_per_task"].get("worker", {})
            top = ", ".join(f"{c} {v:.2f}" for c, v in list(wc.items())[:10])
            lines.append(
                f"| {label} | {p['tasks']} | {rt.get('driver', 0):.2f} ({pt.get('driver', 0):.2f}) | "
                f"{rt.get('worker_main', 0):.2f} ({pt.get('worker_main', 0):.2f}) | "
                f"{rt.get('worker_pool', 0):.2f} ({pt.get('worker_pool', 0):.2f}) | {pt.get('lua', 0):.2f} | {top} |"
            )
        lines += [
            "",
            "A round trip is one request/response on one connection; a MULTI…EXEC block counts once "
            "(redis-py and kombu send it as one pipeline).",
            "",
        ]
        for k in ("chordflow_fanout", "raw_fanout", "chordflow_chain", "raw_chain"):
            v = prof.get(k, {}).get("commands_per_task", {}).get("driver", {})
            if v:
                top = ", ".join(f"{c} {n:.2f}" for c, n in list(v.items())[:8])
                lines.append(f"* driver commands per task, {labels[k]}: {top}")
        lines.append("")
        lines += _sensitivity_text(prof.get("sensitivity"))
    rows = []
    for name, systems in (("fanout", ("chordflow", "raw")), ("chain", ("chordflow", "raw")),
                          ("layered", ("chordflow", "raw_nested", "raw_chain"))):  # fmt: skip
        d = sc.get(name)
        if not d:
            continue
        for s in systems:
            cs = d["cmdstats"].get(s)
            cpu = d["cpu_ms_per_task"].get(s, {})
            if not cs:
                continue
            top = ", ".join(f"{c} {v:.1f}" for c, v in list(cs["calls_per_task"].items())[:6])
            rows.append(
                f"| {name} | {s} | {cs['total_per_task']:.1f} | {top} | {cs['redis_cpu_us_per_task']:.0f} | "
                f"{cpu.get('driver', 0):.2f} | {cpu.get('worker_main', 0):.2f} + {cpu.get('worker_pool', 0):.2f} |"
            )
    if rows:
        lines += [
            "**INFO commandstats over the timed repetitions** (all commands Redis executed, Lua-internal ones "
            "included, divided by tasks executed) and **CPU per task** by process (psutil, all repetitions):",
            "",
            "| scenario | system | Redis commands/task | top commands per task | Redis CPU µs/task | "
            "driver CPU ms/task | worker CPU ms/task: main + pool |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    lines += _floor_text(results)
    lines += _cycle_text(results)
    return "\n".join(lines) + "\n"


def _cycle_text(results: dict[str, Any]) -> list[str]:
    """chordflow's per-task cycle in the fan-out, split by the ledger's own timestamps."""
    fan = results["scenarios"].get("fanout") or {}
    cf = fan.get("chordflow") or {}
    if "slot_cycle_ms" not in cf or "claim_ms" not in cf:
        return []
    cycle, claim = cf["slot_cycle_ms"]["median"], cf["claim_ms"]["median"]
    cmd = (fan.get("cmdstats") or {}).get("chordflow", {})
    lua_us = cmd.get("usec_per_task", {}).get("evalsha")
    out = [
        "**chordflow's cycle per task (flat fan-out, from the ledger's own timestamps)**",
        "",
        f"* Each of the {common.CONCURRENCY} pool processes completes a task every {cycle:.2f} ms "
        f"(median over repetitions; min–max {cf['slot_cycle_ms']['min']:.2f}–{cf['slot_cycle_ms']['max']:.2f}).",
        f"* {claim:.2f} ms ({claim / cycle:.0%}) of that lies between the ledger's `begin` and `succeed` (Redis "
        "clock): the task function, writing `result.json` + `metadata.json`, two structured log lines, and the "
        "`succeed` call itself.",
        f"* The other {cycle - claim:.2f} ms ({1 - claim / cycle:.0%}) is the trip through Celery's consumer that "
        "chordflow inherits from its worker settings (`acks_late`, prefetch multiplier 1, so only "
        f"{common.CONCURRENCY} messages are reserved at a time): the main process acks the previous message "
        "(MULTI/ZREM/HDEL/EXEC), issues BRPOP, registers the new message as unacked (MULTI/ZADD/HSET/EXEC) and "
        "pipes it to the pool process; there Celery's tracer calls chordflow's runner, which sends `begin`; after "
        "`succeed` come the last log line and the hand-back of the outcome to the main process.",
    ]
    if lua_us is not None:
        out.append(
            f"* Redis spends {lua_us:.0f} µs per task executing the two ledger scripts (`EVALSHA` time in "
            "INFO commandstats, which includes every command the scripts run)."
        )
    out.append("")
    return out


def _sensitivity_text(sens: dict[str, Any] | None) -> list[str]:
    if not sens:
        return []
    out = [
        f"**Sensitivity of chordflow's fan-out ({sens['n']:,} no-ops) to worker settings** — the worker is "
        "restarted with the given `CHORDFLOW_*` settings; these runs are for diagnosis only, never for the targets:",
        "",
        "| worker settings | end to end (s) | tasks/s | worker CPU ms/task (main + pool) | Redis CPU ms/task |",
        "|---|---|---|---|---|",
    ]
    for label, v in sens.items():
        if not isinstance(v, dict) or "e2e_s" not in v:
            continue
        cpu = v["cpu_ms_per_task"]
        env = ", ".join(f"`{k}={val}`" for k, val in v["env"].items()) or "–"
        out.append(
            f"| {label} ({env}) | {common.fmt(v['e2e_s'])} | {common.fmt(v['tasks_per_s'])} | "
            f"{cpu.get('worker', 0):.2f} ({cpu.get('worker_main', 0):.2f} + {cpu.get('worker_pool', 0):.2f}) | "
            f"{cpu.get('redis', 0):.3f} |"
        )
    out.append("")
    return out


def _floor_text(results: dict[str, Any]) -> list[str]:
    """Ceilings implied by round trips, Redis CPU and the box's CPU, against the measured fan-out."""
    sc = results["scenarios"]
    prof, fan = sc.get("profile"), sc.get("fanout")
    if not prof or not fan or "rtt" not in prof:
        return []
    rtt_us = prof["rtt"]["unpipelined_us_median"]
    cores = results.get("machine", {}).get("cpu_count") or common.CONCURRENCY
    out = [
        "**What the Redis round-trip floor implies** (flat fan-out; ceilings in tasks/s):",
        "",
        "| system | round trips per task: driver / worker main / pool | ceiling from round trips alone | "
        "ceiling from Redis CPU | ceiling from all CPU on "
        f"{cores} cores | measured |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for key, sysname in (("chordflow_fanout", "chordflow"), ("raw_fanout", "raw")):
        p = prof.get(key)
        if not p or sysname not in fan.get("cpu_ms_per_task", {}):
            continue
        rts = p.get("round_trips_per_task", {})
        drv, main, pool = (rts.get(k, 0.0) for k in ("driver", "worker_main", "worker_pool"))
        # prefetch = concurrency x 1 = 2 slots; each slot's cycle waits for main + pool round trips, and the
        # worker's main process serves every slot one after the other; a driver that publishes one task
        # after another is serial too.
        limits = [common.CONCURRENCY * 1e6 / ((main + pool) * rtt_us) if main + pool else float("inf")]
        if main:
            limits.append(1e6 / (main * rtt_us))
        if drv >= 0.5:
            limits.append(1e6 / (drv * rtt_us))
        rt_ceiling = min(limits)
        cmd = fan["cmdstats"][sysname]
        redis_ceiling = 1e6 / cmd["redis_cpu_us_per_task"] if cmd["redis_cpu_us_per_task"] else float("inf")
        cpu = fan["cpu_ms_per_task"][sysname]
        total_cpu = cpu.get("driver", 0) + cpu.get("worker", 0) + cpu.get("redis", 0)
        cpu_ceiling = cores * 1000 / total_cpu if total_cpu else float("inf")
        tps = fan.get(sysname, {}).get("tasks_per_s", {}).get("median") or 0
        out.append(
            f"| {sysname} | {drv:.1f} / {main:.1f} / {pool:.1f} | {rt_ceiling:,.0f} | {redis_ceiling:,.0f} | "
            f"{cpu_ceiling:,.0f} | {tps:,.0f} |"
        )
        notes.append(
            f"{sysname}: {total_cpu:.2f} ms CPU per task = driver {cpu.get('driver', 0):.2f} + worker main "
            f"{cpu.get('worker_main', 0):.2f} + worker pool {cpu.get('worker_pool', 0):.2f} + Redis "
            f"{cpu.get('redis', 0):.2f}"
        )
    out += [
        "",
        f"Round trip = {rtt_us:.0f} µs (unpipelined, measured above). *Ceiling from round trips alone*: with "
        f"prefetch = concurrency × 1 = {common.CONCURRENCY} messages in flight, each slot waits for the worker "
        "main process's and the pool process's round trips in turn, and a driver that publishes task after "
        "task waits for its own. *Ceiling from Redis CPU*: 1 s ÷ Redis CPU per task (INFO cpu, single-threaded "
        "server). *Ceiling from all CPU*: cores ÷ CPU per task of driver + worker + Redis processes (psutil). "
        + "; ".join(notes)
        + ".",
        "",
    ]
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        common.log("interrupted; every process started by the bench has been stopped")
        sys.exit(130)
