"""Scenario 5 — scale: 10, 1,000, (10,000) and 100,000 nodes (quick: 10, 1,000, 10,000).

Shape: ``cf_tasks.layered(width, depth)`` of no-ops — 5x2, 100x10, 1,000x10, 10,000x10 — wide
layers, 2-3 parents per node. For every size:

* orchestrator = a fresh ``python -m bench.scale --child`` process that imports chordflow, does one
  1-node warm-up run, builds the Pipeline and calls ``Client.submit``; it reports build and submit
  time, its RSS when ready (after that warm-up) and its peak RSS after the submit (``VmHWM``, reset
  to the current RSS when ready, so the peak covers building the Pipeline and submitting it);
* Redis memory of the run = ``INFO memory used_memory`` after the run minus before (the run's keys
  persist with their TTL), cross-checked with the sum of ``MEMORY USAGE`` over the run's keys;
* largest broker message: exact, via a MONITOR reader that records every LPUSH onto the queue, in a
  separate untimed run (sizes up to 10,000 in full mode, up to 1,000 in quick mode); for the largest
  size MONITOR would cost more than the run itself, so a sampler reads the newest and oldest 10
  messages of the queue with LRANGE every 0.2 s during the timed run and keeps the largest seen;
* raw Celery's largest message for the same 10- and 1,000-node shapes (nested chords and chain of
  chords), by MONITOR, for comparison.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from bench import cf_tasks, common
from bench import raw_celery_app as rc

NAME = "scale"
TITLE = "5. Scale"
SHAPES = {10: (5, 2), 1_000: (100, 10), 10_000: (1_000, 10), 100_000: (10_000, 10)}


def _monitor_limit(cfg: common.Config) -> int:
    return 1_000 if cfg.quick else 10_000


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": {}, "raw_largest_message": {}}
    for size in cfg.scale_sizes:
        width, depth = SHAPES[size]
        reps = 1 if size >= 100_000 else cfg.scale_repeat
        s = common.Samples()
        runs = []
        for rep in range(reps):
            run = _one(stack, width, depth)
            runs.append(run)
            s.add(
                submit_s=run["submit_s"],
                build_s=run["build_s"],
                e2e_s=run["e2e_s"],
                nodes_per_s=size / run["e2e_s"],
                redis_bytes=run["redis_bytes"],
                redis_bytes_per_node=run["redis_bytes"] / size,
                key_bytes_per_node=run["key_bytes"] / size,
                rss_ready_mb=run["rss_ready"] / 2**20,
                rss_peak_mb=run["maxrss"] / 2**20,
                rss_delta_mb=(run["maxrss"] - run["rss_ready"]) / 2**20,
            )
            common.log(
                f"scale {size} rep {rep + 1}: submit {run['submit_s']:.3f}s e2e {run['e2e_s']:.1f}s "
                f"redis {run['redis_bytes'] / size:.0f} B/node peak rss {run['maxrss'] / 2**20:.0f} MB "
                f"sampled largest {run['sampled_largest']} B ({run['sampled']} msgs)"
            )
        entry: dict[str, Any] = {
            "width": width,
            "depth": depth,
            **s.summaries(),
            "sampled_largest_bytes": max(r["sampled_largest"] for r in runs),
            "sampled_messages": sum(r["sampled"] for r in runs),
            "cmdstats": common.merge_cmdstats([r["cmd"] for r in runs]),
        }
        if size <= _monitor_limit(cfg):
            entry["monitor"] = _monitored_cf(stack, width, depth)
            common.log(f"scale {size} MONITOR: largest LPUSH {entry['monitor']['largest']} B")
        out["sizes"][str(size)] = entry
    raw_sizes = [10] if cfg.quick else [10, 1_000]
    for size in raw_sizes:
        w, d = SHAPES[size]
        for form in ("nested", "chain"):
            out["raw_largest_message"][f"{form}:{size}"] = _monitored_raw(stack, w, d, form)
            common.log(f"scale raw {form} {size}: {out['raw_largest_message'][f'{form}:{size}']}")
    return out


def _one(stack: common.Stack, width: int, depth: int) -> dict[str, Any]:
    """One run of a width x depth layered DAG submitted by a fresh orchestrator process."""
    client = stack.cf_client()
    r = stack.r(0)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(common.REPO), env.get("PYTHONPATH", "")] if p)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.scale", "--child", stack.cf_url, str(stack.artifacts), str(width), str(depth)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=common.REPO,
        env=env,
        text=True,
        preexec_fn=common._die_with_parent,  # noqa: PLW1509
    )
    try:
        ready = child.stdout.readline()
        if not ready.startswith("READY"):
            raise RuntimeError(f"scale child failed to start: {ready!r}")
        time.sleep(0.3)
        mem0 = common.used_memory(r)
        cmd0 = common.commandstats(r)
        sampler = common.QueueSampler(stack.r(0), common.CF_QUEUE).start()
        child.stdin.write("GO\n")
        child.stdin.flush()
        line = child.stdout.readline()
        if not line.strip():
            raise RuntimeError("scale child died during submit")
        rep = json.loads(line)
        n = width * depth
        poll = 0.02 if n <= 10_000 else 0.2
        snap = client.wait(rep["run_id"], timeout_s=3600, poll_s=poll, detail=False)
        sampler.stop()
        if snap.state != "succeeded" or snap.counts().get("succeeded") != n:
            raise RuntimeError(f"scale run {rep['run_id']} ended {snap.state} {snap.counts()}")
        cmd1 = common.commandstats(r)
        time.sleep(0.3)
        mem1 = common.used_memory(r)
        from orchestrator.keys import run_keys

        key_bytes = 0
        for key in run_keys(rep["run_id"]).per_run():
            key_bytes += int(r.memory_usage(key, samples=0) or 0)
        child.wait(30)
    finally:
        common.terminate(child, grace_s=5)
    stack.clean_artifacts()
    stack.check_workers()
    return {
        **rep,
        "e2e_s": float(snap.meta["finished_at"]) - rep["t_submit_wall"],
        "redis_bytes": mem1 - mem0,
        "key_bytes": key_bytes,
        "cmd": common.commandstats_diff(cmd0, cmd1, n),
        "sampled_largest": sampler.largest,
        "sampled": sampler.sampled,
    }


def _monitored_cf(stack: common.Stack, width: int, depth: int) -> dict[str, Any]:
    mon = common.Monitor(stack.r(0), lpush_keys=(common.CF_QUEUE,)).start()
    try:
        common.cf_run(stack, cf_tasks.layered(width, depth))
    finally:
        mon.stop(stack.r(0))
    return {"largest": max(mon.lpush_sizes), "count": len(mon.lpush_sizes), "total_bytes": sum(mon.lpush_sizes)}


def _monitored_raw(stack: common.Stack, width: int, depth: int, form: str) -> dict[str, Any]:
    sig = rc.layered_nested_chords(width, depth) if form == "nested" else rc.layered_chain_of_chords(width, depth)
    mon = common.Monitor(stack.r(1), lpush_keys=(common.RAW_QUEUE,)).start()
    try:
        common.raw_run(stack, sig, rc.layered_task_count(width, depth, form))
    finally:
        mon.stop(stack.r(1))
    return {"largest": max(mon.lpush_sizes), "count": len(mon.lpush_sizes), "total_bytes": sum(mon.lpush_sizes)}


# ---- the orchestrator child process -------------------------------------------------------------


def _child(url: str, artifacts: str, width: int, depth: int) -> None:
    import psutil
    from pydantic import SecretStr

    from orchestrator.client import Client
    from orchestrator.settings import Settings

    client = Client(
        Settings(
            redis_url=SecretStr(url),
            artifact_root=artifacts,
            task_modules=["bench.cf_tasks"],
            allowed_task_prefixes=["bench."],
            task_events=False,
            use_cache=False,  # as every execution scenario (bench/common.py): each repetition runs its tasks
        )
    )
    warm = client.submit(cf_tasks.fanout(1))
    client.wait(warm, timeout_s=60, poll_s=0.02, detail=False)
    proc = psutil.Process()
    hwm_reset = _reset_peak_rss()
    rss_ready = proc.memory_info().rss
    print(f"READY {rss_ready}", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return
    t0 = time.perf_counter()
    pipeline = cf_tasks.layered(width, depth)
    build = time.perf_counter() - t0
    t_wall = time.time()
    t0 = time.perf_counter()
    run_id = client.submit(pipeline)
    submit = time.perf_counter() - t0
    # Peak RSS = VmHWM of this process. Not ru_maxrss: Linux carries the parent's ru_maxrss across
    # fork+exec, so a child of a big driver would report the driver's RSS.
    maxrss = _vm_hwm()
    print(
        json.dumps(
            {
                "run_id": run_id,
                "build_s": build,
                "submit_s": submit,
                "t_submit_wall": t_wall,
                "rss_ready": rss_ready,
                "rss_after": proc.memory_info().rss,
                "maxrss": maxrss,
                "peak_since": "ready (VmHWM reset)" if hwm_reset else "process start",
            }
        ),
        flush=True,
    )


def _vm_hwm() -> int:
    """Peak resident set size of this process, bytes (``VmHWM`` of /proc/self/status)."""
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ---- report -------------------------------------------------------------------------------------


def report(data: dict[str, Any], cfg: common.Config) -> tuple[str, list[dict[str, Any]]]:
    sizes = data["sizes"]
    keys = sorted(sizes, key=int)
    lines = [
        f"### {TITLE}: layered no-op DAGs of {', '.join(f'{int(k):,}' for k in keys)} nodes",
        "",
        "| nodes (width × depth) | repetitions | submit (s) | build Pipeline (s) | end to end (s) | nodes/s | "
        "largest message, MONITOR (B) | largest message, sampled (B) | Redis memory per node (B) | "
        "run keys per node, MEMORY USAGE (B) | orchestrator RSS ready → peak (MB) | RSS growth per node (KB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        e = sizes[k]
        mon = e.get("monitor")
        rss_ready = e["rss_ready_mb"]["median"]
        rss_peak = e["rss_peak_mb"]["median"]
        delta_mb = e["rss_delta_mb"]["median"]
        per_node = f"{delta_mb * 1024 / int(k):.2f}" if delta_mb >= 1 else "< 1 MB in all"
        lines.append(
            f"| {int(k):,} ({e['width']} × {e['depth']}) | {e['submit_s']['n']} | {common.fmt(e['submit_s'])} | "
            f"{common.fmt(e['build_s'])} | {common.fmt(e['e2e_s'])} | {common.fmt(e['nodes_per_s'])} | "
            f"{_mon_cell(mon)} | "
            f"{e['sampled_largest_bytes'] or '–'} ({e['sampled_messages']:,} seen) | "
            f"{common.fmt(e['redis_bytes_per_node'])} | {common.fmt(e['key_bytes_per_node'])} | "
            f"{rss_ready:.0f} → {rss_peak:.0f} | {per_node} |"
        )
    raw = data.get("raw_largest_message") or {}
    if raw:
        lines += [
            "",
            "raw Celery, same shapes, largest LPUSHed message (MONITOR): "
            + "; ".join(
                f"{'nested chords' if f == 'nested' else 'chain of chords'} at {int(s):,} nodes: "
                f"{v['largest']:,} B ({v['count']:,} messages, {v['total_bytes'] / 1e6:.2f} MB in total)"
                for f, s, v in ((kk.split(":")[0], kk.split(":")[1], vv) for kk, vv in raw.items())
            )
            + ".",
        ]
    lines += [
        "",
        "How: *largest message, MONITOR* = every LPUSH onto the queue recorded by a MONITOR reader in an extra, "
        "untimed run (sizes up to "
        f"{1_000 if cfg.quick else 10_000:,}); *sampled* = during the timed runs a sampler LRANGEs the 10 newest "
        "and 10 oldest queued messages every 0.2 s (the only method used at the largest size, where MONITOR "
        "would cost more than the run). Message sizes differ only by the length of node names (`n9_9999`) and "
        "dispatch counters inside the ids. *Redis memory per node* = `used_memory` after the run − before "
        "(the run's keys persist with their TTL; noisy at 10 nodes); *run keys* = sum of `MEMORY USAGE` over "
        "the run's keys. *Orchestrator RSS*: a fresh process imports chordflow, does a 1-node warm-up run "
        "(*ready*), then builds the Pipeline and submits it; *peak* = its `VmHWM`, reset at *ready*.",
    ]
    checks = []
    small, big = keys[0], keys[-1]
    small_msg = (sizes[small].get("monitor") or {}).get("largest")
    big_msg = (sizes[big].get("monitor") or {}).get("largest") or sizes[big]["sampled_largest_bytes"]
    ok_msg = None if not small_msg or not big_msg else abs(big_msg - small_msg) <= 64
    checks.append(
        {
            "scenario": NAME,
            "target": f"largest message same size at {int(small):,} and {int(big):,} nodes (±64 B of id digits)",
            "value": f"{small_msg} B vs {big_msg} B",
            "pass": ok_msg,
        }
    )
    if "10000" in sizes:
        sub = sizes["10000"]["submit_s"]["median"]
        target = "submit of a 10,000-node DAG < 1 s"
        checks.append({"scenario": NAME, "target": target, "value": sub, "pass": sub < 1.0})
    if len(keys) >= 3:
        a, b = keys[-2], keys[-1]
        mem_a, mem_b = sizes[a]["redis_bytes_per_node"]["median"], sizes[b]["redis_bytes_per_node"]["median"]
        ok_mem = mem_b <= 1.25 * mem_a
        checks.append(
            {
                "scenario": NAME,
                "target": f"Redis memory per node at {int(b):,} ≤ 1.25 × at {int(a):,} (linear)",
                "value": f"{mem_a:.0f} → {mem_b:.0f} B/node",
                "pass": ok_mem,
            }
        )
        rss_a = sizes[a]["rss_delta_mb"]["median"] * 2**20 / int(a)
        rss_b = sizes[b]["rss_delta_mb"]["median"] * 2**20 / int(b)
        checks.append(
            {
                "scenario": NAME,
                "target": f"orchestrator RSS growth per node at {int(b):,} ≤ 1.25 × at {int(a):,} (linear)",
                "value": f"{rss_a / 1024:.2f} → {rss_b / 1024:.2f} KB/node",
                "pass": rss_b <= 1.25 * rss_a,
            }
        )
        sub_a = sizes[a]["submit_s"]["median"] / int(a)
        sub_b = sizes[b]["submit_s"]["median"] / int(b)
        checks.append(
            {
                "scenario": NAME,
                "target": f"(info, no target) submit time per node at {int(a):,} and {int(b):,} nodes",
                "value": f"{sub_a * 1e6:.0f} → {sub_b * 1e6:.0f} µs/node",
                "pass": None,
            }
        )
    big_ok = sizes[big]["e2e_s"]["n"] >= 1
    checks.append({"scenario": NAME, "target": f"a {int(big):,}-node run completes", "value": None, "pass": big_ok})
    lines += ["", "| target | measured | result |", "|---|---|---|"]
    for c in checks:
        v = c["value"]
        v = f"{v:.3f} s" if isinstance(v, float) else (v or "yes")
        lines.append(f"| {c['target']} | {v} | {common.status(c['pass'])} |")
    lines.append("")
    return "\n".join(lines), checks


def _mon_cell(mon: dict[str, Any] | None) -> str:
    return "–" if not mon else f"{mon['largest']:,} ({mon['count']:,} msgs)"


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit("usage: python -m bench.scale --child URL ARTIFACT_ROOT WIDTH DEPTH (run by bench.run)")
