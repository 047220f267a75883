"""Scenario 6 — map nodes: fan-out over run-time chunks with a reduce (issue 10).

(a) **2,000-chunk map + reduce.** chordflow ``elements(2000) -> add_map(ident) -> total(MapResults)``
    (default ``max_in_flight`` 64, ``batch_size`` 1: one message per chunk) vs raw Celery
    ``chord(group(ident.s(i) x 2000), total.s())`` (Redis result backend, chord counter) vs Dask
    ``client.map(ident, range(2000))`` + ``client.submit(sum, futures)``. The reduce's value is checked
    for every system. chordflow's end to end includes the upstream task that returns the list (raw Celery
    and Dask get the elements at submit).
(b) **1,000,000 small items.** chordflow's map with ``batch_size`` (one message per batch, the task still
    called per element) over a 1,000,000-int list, reduce = sum; vs raw Celery
    ``ident.chunks(zip(range(N)), size)`` as a chord header with a summing body (same chunk size), and a
    raw Celery group of per-item tasks measured on fewer items (items/s compared).
(c) **Redis memory per chunk.** Maps of 10,000 and 100,000 one-element chunks; ``used_memory`` after the
    run ended (its keys are kept for the run TTL) minus before it was submitted, per chunk.

The chordflow worker is restarted for this scenario with ``CHORDFLOW_MAX_RESULT_BYTES`` raised (the
upstream of (b) returns ~7 MB of JSON; the default limit is 1 MB), and restored afterwards. Every
chordflow run's keys are deleted after it was measured (untimed) so the runs do not pile up in Redis.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from bench import cf_tasks, common
from bench import raw_celery_app as rc

NAME = "map"
TITLE = "6. Map"
MAX_RESULT_BYTES = 64_000_000


def sizes(cfg: common.Config) -> dict[str, Any]:
    if cfg.quick:
        return {"chunks": 200, "items": 50_000, "batches": (1_000,), "per_item": 2_000, "mem": (1_000, 10_000)}
    return {"chunks": 2_000, "items": 1_000_000, "batches": (1_000, 5_000), "per_item": 20_000,
            "mem": (10_000, 100_000)}  # fmt: skip


# ---- one chordflow map run ---------------------------------------------------------------------


def _forget_run(r: Any, run_id: str) -> None:
    from orchestrator.keys import run_keys

    k = run_keys(run_id)
    r.delete(*k.per_run(), f"{k.meta}:notifications")


def _settled_memory(r: Any, timeout_s: float = 10.0) -> int:
    """``used_memory`` once Redis has no lazily freed objects pending (valkey 8 frees DEL'd keys in a
    background thread: a previous run's keys must not be subtracted from this one's)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = r.info("memory")
        if int(info.get("lazyfree_pending_objects", 0)) == 0 or time.monotonic() > deadline:
            return int(info["used_memory"])
        time.sleep(0.05)


def cf_map_run(
    stack: common.Stack, n: int, batch: int, timeout_s: float = 1800, timeline: bool = False
) -> dict[str, Any]:
    """Submit ``map_reduce(n, batch)``, wait for its end, check the reduce's value; Redis memory and, with
    ``timeline``, the ledger's timestamps of every chunk (Redis clock)."""
    from orchestrator.keys import run_keys

    pipeline = cf_tasks.map_reduce(n, batch)
    chunks = -(-n // batch)
    client, r = stack.cf_client(), stack.r(0)
    mem0 = _settled_memory(r)
    cpu = common.CpuWatch(common.roles(stack, "chordflow")).start()
    before = common.commandstats(r)
    t0w = time.time()
    t0 = common.now()
    run_id = client.submit(pipeline)
    submit = common.now() - t0
    snap = client.wait(run_id, timeout_s=timeout_s, poll_s=0.02, detail=False)
    wall = common.now() - t0
    after = common.commandstats(r)
    cpu_s = cpu.stop()
    mem1 = common.used_memory(r)
    if not snap.finished or snap.state != "succeeded":
        raise RuntimeError(f"chordflow map run {run_id} ended {snap.state} ({snap.counts()})")
    k = run_keys(run_id)
    value = json.loads(r.hget(k.results, "total") or b"null")
    expect = n * (n - 1) // 2
    if value != expect:
        raise RuntimeError(f"chordflow map run {run_id}: reduce returned {value}, expected {expect}")
    total = int(r.hget(k.maps, "ident:total") or 0)
    if total != chunks:
        raise RuntimeError(f"chordflow map run {run_id}: {total} chunks, expected {chunks}")
    out = {
        "run_id": run_id,
        "submit_s": submit,
        "e2e_s": float(snap.meta["finished_at"]) - t0w,
        "wall_s": wall,
        "mem_bytes": mem1 - mem0,
        "cmd": common.commandstats_diff(before, after, chunks),
        "cpu_s": cpu_s,
        "tasks": chunks,
    }
    if timeline:
        out["timeline"] = _timeline(r, run_id, t0w)
    _forget_run(r, run_id)
    stack.clean_artifacts()
    stack.check_workers()
    return out


def _timeline(r: Any, run_id: str, t0w: float) -> dict[str, float]:
    """Where a map run's time went, from the ledger's timestamps (Redis clock, ms)."""
    from orchestrator.keys import run_keys

    k = run_keys(run_id)
    t = {a.decode(): float(b) for a, b in r.hgetall(k.times).items()}
    io: dict[str, dict[str, float]] = {}
    for key, v in r.hscan_iter(k.chunk_io, match="ident[[]*]:t:*", count=5000):
        c, _, what = key.decode().partition(":t:")
        io.setdefault(c, {})[what] = float(v)
    q = [c["queued"] for c in io.values()]
    s = [c["attempt_started"] for c in io.values()]
    f = [c["finished"] for c in io.values()]
    claim = [c["finished"] - c["attempt_started"] for c in io.values()]
    wait = [c["attempt_started"] - c["queued"] for c in io.values()]
    span = max(f) - min(s)
    meta_fin = float(r.hget(k.meta, "finished_at"))

    def ms(x: float) -> float:
        return x * 1e3

    return {
        "submit_to_upstream_start_ms": ms(t["elements:attempt_started"] - t0w),
        "upstream_ms": ms(t["elements:finished"] - t["elements:attempt_started"]),
        "upstream_end_to_first_chunk_queued_ms": ms(min(q) - t["elements:finished"]),
        "first_chunk_queued_to_last_finished_ms": ms(max(f) - min(q)),
        "last_chunk_to_reduce_start_ms": ms(t["total:attempt_started"] - max(f)),
        "reduce_ms": ms(t["total:finished"] - t["total:attempt_started"]),
        "reduce_end_to_run_finished_ms": ms(meta_fin - t["total:finished"]),
        "chunk_claim_ms": ms(statistics.mean(claim)),  # begin -> succeed: task + result write + succeed call
        "chunk_queue_wait_ms": ms(statistics.median(wait)),
        "chunk_slot_cycle_ms": ms(common.CONCURRENCY * span / len(io)),
        "map_chunks_per_s": len(io) / (max(f) - min(q)) if max(f) > min(q) else 0.0,
    }


# ---- Celery phase ------------------------------------------------------------------------------


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    sz = sizes(cfg)
    stack.restart_cf_worker({"CHORDFLOW_MAX_RESULT_BYTES": str(MAX_RESULT_BYTES)})
    try:
        return _measure(stack, cfg, sz)
    finally:
        stack.restart_cf_worker({})


def _measure(stack: common.Stack, cfg: common.Config, sz: dict[str, Any]) -> dict[str, Any]:
    ex0 = common.executed(stack)
    n = sz["chunks"]
    # (a) 2,000-chunk map + reduce vs chord
    s = {"chordflow": common.Samples(), "raw": common.Samples()}
    runs: dict[str, list[dict[str, Any]]] = {"chordflow": [], "raw": []}
    expect = n * (n - 1) // 2
    for rep in range(cfg.repeat):
        for system in common.alternate(rep, ["chordflow", "raw"]):
            if system == "chordflow":
                out = cf_map_run(stack, n, 1, timeline=True)
                s[system].add(**out["timeline"])
            else:
                out = common.raw_run(stack, rc.map_chord(n), n + 1, check=lambda v: v == expect)
            s[system].add(submit_s=out["submit_s"], e2e_s=out["e2e_s"], chunks_per_s=n / out["e2e_s"])
            runs[system].append(out)
            common.log(f"map {n} chunks {system} rep {rep + 1}: submit {out['submit_s']:.3f}s e2e {out['e2e_s']:.3f}s")
    result = common.scenario_result(stack, ex0, s, runs, n=n)

    # (b) 1,000,000 small items
    items, per_item = sz["items"], sz["per_item"]
    big: dict[str, common.Samples] = {}
    for rep in range(cfg.repeat):
        order = ["chordflow", "raw_chunks"] if rep % 2 == 0 else ["raw_chunks", "chordflow"]
        for batch in sz["batches"]:
            for system in order:
                key = f"{system}_b{batch}"
                if system == "chordflow":
                    out = cf_map_run(stack, items, batch, timeline=True)
                    extra = {k: out["timeline"][k] for k in ("upstream_ms", "reduce_ms", "chunk_claim_ms",
                                                             "first_chunk_queued_to_last_finished_ms")}  # fmt: skip
                else:
                    sig = rc.chunks_chord(items, batch)
                    out = common.raw_run(
                        stack, sig, -(-items // batch) + 1, check=lambda v: v == items * (items - 1) // 2
                    )
                    extra = {}
                big.setdefault(key, common.Samples()).add(e2e_s=out["e2e_s"], submit_s=out["submit_s"],
                                                         items_per_s=items / out["e2e_s"], **extra)  # fmt: skip
                common.log(f"map {items:,} items batch {batch} {system} rep {rep + 1}: e2e {out['e2e_s']:.3f}s "
                           f"({items / out['e2e_s']:,.0f} items/s)")  # fmt: skip
        out = common.raw_run(stack, rc.per_item_group(per_item), per_item,
                             check=lambda v: sum(v) == per_item * (per_item - 1) // 2)  # fmt: skip
        big.setdefault("raw_per_item", common.Samples()).add(e2e_s=out["e2e_s"], items_per_s=per_item / out["e2e_s"])
        common.log(f"map raw per-item group {per_item:,} rep {rep + 1}: e2e {out['e2e_s']:.3f}s "
                   f"({per_item / out['e2e_s']:,.0f} items/s)")  # fmt: skip
    result["items"] = {"n": items, "per_item_n": per_item, "batches": list(sz["batches"]),
                       **{k: v.summaries() for k, v in big.items()}}  # fmt: skip

    # (c) Redis memory per chunk, 10,000 vs 100,000 chunks (the largest once, as in scenario 5)
    mem: dict[str, Any] = {}
    for i, m in enumerate(sz["mem"]):
        reps = cfg.repeat if i == 0 else 1
        smp = common.Samples()
        for rep in range(reps):
            out = cf_map_run(stack, m, 1, timeout_s=3600)
            smp.add(e2e_s=out["e2e_s"], bytes_per_chunk=out["mem_bytes"] / m, chunks_per_s=m / out["e2e_s"],
                    redis_cmds_per_chunk=out["cmd"]["total_per_task"])  # fmt: skip
            common.log(f"map {m:,} chunks (memory) rep {rep + 1}: e2e {out['e2e_s']:.1f}s, "
                       f"{out['mem_bytes'] / m:,.0f} bytes/chunk in Redis")  # fmt: skip
        mem[str(m)] = smp.summaries()
    result["memory"] = {"sizes": list(sz["mem"]), **mem}
    result["executed"] = common.executed_delta(ex0, common.executed(stack))
    return result


# ---- Dask phase --------------------------------------------------------------------------------


def _ident(x: Any) -> Any:
    return x


def measure_dask(client: Any, cfg: common.Config) -> dict[str, Any]:
    n = sizes(cfg)["chunks"]
    s = common.Samples()
    for rep in range(cfg.repeat):
        t0 = time.perf_counter()
        futs = client.map(_ident, range(n), pure=False)
        tot = client.submit(sum, futs, pure=False)
        submit = time.perf_counter() - t0
        value = tot.result()
        e2e = time.perf_counter() - t0
        if value != n * (n - 1) // 2:
            raise RuntimeError(f"Dask map reduce returned {value}")
        del futs, tot
        s.add(submit_s=submit, e2e_s=e2e, chunks_per_s=n / e2e)
        common.log(f"map {n} dask rep {rep + 1}: e2e {e2e:.3f}s")
    return s.summaries()


# ---- report ------------------------------------------------------------------------------------


def _r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def report(data: dict[str, Any], cfg: common.Config) -> tuple[str, list[dict[str, Any]]]:
    cf, raw, dk = data.get("chordflow", {}), data.get("raw", {}), data.get("dask", {})
    n = data["n"]
    r_e2e = common.ratio(cf.get("e2e_s"), raw.get("e2e_s"))
    ok = None if r_e2e is None else r_e2e <= 0.5
    checks = [{"scenario": NAME, "target": f"{n:,}-chunk map + reduce end to end ≤ 0.5× raw chord", "value": r_e2e,
               "pass": ok}]  # fmt: skip
    lines = [
        f"### {TITLE}: {n:,}-chunk map with a reduce; {data.get('items', {}).get('n', 0):,} small items; "
        "Redis memory per chunk",
        "",
        f'**(a) {n:,} chunks + reduce.** chordflow `elements({n}) -> add_map(ident, over="elements") -> '
        "total(MapResults[int])` (max_in_flight 64, one message per chunk; the end to end includes the upstream "
        f"task that returns the list) vs raw Celery `chord(group(ident.s(i) × {n}), total.s())` vs Dask "
        "`client.map(ident, range(n))` + `client.submit(sum, futures)`. Every system's reduce returned "
        f"sum(range({n})).",
        "",
        "| metric | chordflow map | raw Celery chord | Dask | ratio chordflow/raw | target | result |",
        "|---|---|---|---|---|---|---|",
        f"| submission (s) | {common.fmt(cf.get('submit_s'))} | {common.fmt(raw.get('submit_s'))} | "
        f"{common.fmt(dk.get('submit_s'))} | {_r(common.ratio(cf.get('submit_s'), raw.get('submit_s')))} | – | – |",
        f"| end to end (s) | {common.fmt(cf.get('e2e_s'))} | {common.fmt(raw.get('e2e_s'))} | "
        f"{common.fmt(dk.get('e2e_s'))} | {_r(r_e2e)} | ≤ 0.5 | {common.status(ok)} |",
        f"| chunks/s end to end | {common.fmt(cf.get('chunks_per_s'))} | {common.fmt(raw.get('chunks_per_s'))} | "
        f"{common.fmt(dk.get('chunks_per_s'))} | {_r(common.ratio(cf.get('chunks_per_s'), raw.get('chunks_per_s')))}"
        " | – | – |",
    ]
    cmd, cpu = data.get("cmdstats", {}), data.get("cpu_ms_per_task", {})
    if cmd.get("chordflow") and cmd.get("raw"):

        def cpu_cell(s: str) -> str:
            c = cpu.get(s, {})
            return (
                f"{c.get('driver', 0):.2f} / {c.get('worker_main', 0):.2f} / {c.get('worker_pool', 0):.2f} / "
                f"{c.get('redis', 0):.2f}"
            )

        lines += [
            f"| Redis commands per chunk | {cmd['chordflow']['total_per_task']:.1f} | "
            f"{cmd['raw']['total_per_task']:.1f}"
            " | – | – | – | – |",
            f"| CPU ms per chunk: driver / worker main / pool / Redis | {cpu_cell('chordflow')} | "
            f"{cpu_cell('raw')} | – "
            "| – | – | – |",
        ]
    lines += ["", _timeline_text(cf), ""]
    lines += _items_text(data.get("items") or {}, checks)
    lines += _memory_text(data.get("memory") or {}, checks)
    ex = data.get("executed") or {}
    lines += [f"Executions counted by the workers (`celery inspect stats`, whole scenario): "
              f"{'; '.join(f'{k}: {v}' for k, v in ex.items())}.", ""]  # fmt: skip
    return "\n".join(lines), checks


def _timeline_text(cf: dict[str, Any]) -> str:
    if "chunk_claim_ms" not in cf:
        return ""

    def g(k: str) -> str:
        return common.fmt(cf.get(k))

    return (
        "chordflow's run from the ledger's timestamps (ms, medians): submit → upstream starts "
        f"{g('submit_to_upstream_start_ms')}; upstream task {g('upstream_ms')}; upstream end → first chunk queued "
        f"{g('upstream_end_to_first_chunk_queued_ms')}; first chunk queued → last chunk settled "
        f"{g('first_chunk_queued_to_last_finished_ms')}; last chunk → reduce starts "
        f"{g('last_chunk_to_reduce_start_ms')}; "
        f"reduce {g('reduce_ms')}; reduce end → run finished {g('reduce_end_to_run_finished_ms')}. Per chunk: "
        f"each of the {common.CONCURRENCY} pool processes settles a chunk every {g('chunk_slot_cycle_ms')} ms, of "
        f"which {g('chunk_claim_ms')} ms lie between the ledger's `begin` and `succeed` (task, result, "
        "`succeed` call); "
        f"a chunk waits {g('chunk_queue_wait_ms')} ms from queued to started (max_in_flight keeps 64 on the broker)."
    )


def _items_text(it: dict[str, Any], checks: list[dict[str, Any]]) -> list[str]:
    if not it:
        return []
    n, per = it["n"], it["per_item_n"]
    pi = it.get("raw_per_item", {})
    lines = [
        f"**(b) {n:,} small items**, reduce = sum. chordflow map with `batch_size` (one message per batch; "
        f"the task is still called per element) vs raw Celery `ident.chunks(zip(range({n})), size)` as a chord "
        f"header with a summing body (same chunk size), vs a raw Celery group of per-item tasks measured on "
        f"{per:,} items (a million would take it half an hour). items/s = items ÷ end to end.",
        "",
        "| batch / chunk size | chordflow map e2e (s) | chordflow items/s | raw `chunks()` chord e2e (s) | "
        "raw `chunks()` "
        "items/s | chordflow ÷ raw per-item group | target ≥ 10× | chordflow ÷ raw `chunks()` | target ≥ 1× |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in it["batches"]:
        cf, ch = it.get(f"chordflow_b{b}", {}), it.get(f"raw_chunks_b{b}", {})
        r1 = common.ratio(cf.get("items_per_s"), pi.get("items_per_s"))
        r2 = common.ratio(cf.get("items_per_s"), ch.get("items_per_s"))
        ok1 = None if r1 is None else r1 >= 10
        ok2 = None if r2 is None else r2 >= 1
        lines.append(f"| {b:,} ({-(-n // b):,} chunks) | {common.fmt(cf.get('e2e_s'))} | "
                     f"{common.fmt(cf.get('items_per_s'))} | "
                     f"{common.fmt(ch.get('e2e_s'))} | {common.fmt(ch.get('items_per_s'))} | {_r(r1)}× | "
                     f"{common.status(ok1)} | {_r(r2)}× | {common.status(ok2)} |")  # fmt: skip
        checks.append({"scenario": NAME, "target": f"{n:,} items (batch {b:,}) ≥ 10× raw per-item group items/s",
                       "value": r1, "pass": ok1})  # fmt: skip
        checks.append({"scenario": NAME, "target": f"{n:,} items (batch {b:,}) ≥ raw chunks() items/s",
                       "value": r2, "pass": ok2})  # fmt: skip
    lines += [
        "",
        f"Raw Celery group of {per:,} per-item tasks: {common.fmt(pi.get('e2e_s'))} s, "
        f"{common.fmt(pi.get('items_per_s'))} items/s.",
    ]
    for b in it["batches"]:
        cf = it.get(f"chordflow_b{b}", {})
        if "upstream_ms" in cf:
            lines.append(
                f"chordflow batch {b:,}, ledger timestamps (ms): upstream task returning the {n:,} ints (incl. the "
                f"split into chunks) {common.fmt(cf.get('upstream_ms'))}; chunks "
                f"{common.fmt(cf.get('first_chunk_queued_to_last_finished_ms'))} (begin → succeed "
                f"{common.fmt(cf.get('chunk_claim_ms'))} per chunk); reduce {common.fmt(cf.get('reduce_ms'))}."
            )
    lines.append("")
    return lines


def _memory_text(mem: dict[str, Any], checks: list[dict[str, Any]]) -> list[str]:
    if not mem:
        return []
    small, large = (str(x) for x in mem["sizes"])
    a, b = mem.get(small, {}), mem.get(large, {})
    r = common.ratio(b.get("bytes_per_chunk"), a.get("bytes_per_chunk"))
    ok = None if r is None else abs(r - 1) <= 0.25
    checks.append({"scenario": NAME, "target": f"{int(large):,}-chunk map: Redis bytes/chunk within ±25 % of "
                   f"{int(small):,}-chunk map's", "value": r, "pass": ok})  # fmt: skip
    rows = [
        f"| {int(k):,} | {common.fmt(v.get('e2e_s'))} | {common.fmt(v.get('chunks_per_s'))} | "
        f"{common.fmt(v.get('bytes_per_chunk'))} | {common.fmt(v.get('redis_cmds_per_chunk'))} |"
        for k, v in ((small, a), (large, b))
    ]
    return [
        "**(c) Redis memory per chunk.** One-element chunks of `ident`, default max_in_flight 64; `used_memory` "
        "when the run has ended (its keys — every chunk's input, result, state and timestamps — are kept for the "
        "run TTL) minus before submit, divided by the chunks.",
        "",
        "| chunks | end to end (s) | chunks/s | Redis bytes per chunk | Redis commands per chunk |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Ratio of bytes per chunk, {int(large):,} ÷ {int(small):,}: {_r(r)} (target within ±25 %: "
        f"{common.status(ok)}).",
        "",
    ]
