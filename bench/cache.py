"""Scenario — cache: a layered DAG of 1,000 cacheable no-ops (100 wide, 10 deep), run once to fill
the cache, then (a) again unchanged: every node ``cached`` at submit, and (b) with 1 % of the roots
changed (one root's param): that root and its descendants run, the rest is cached.

End to end = run meta ``finished_at`` (Redis clock) minus the wall time before ``submit`` (as in every
scenario). Round trips = requests this process sends to Redis (a pipeline or MULTI is one), counted
at the socket; the workers send none in a fully cached run. Redis commands per node come from
``INFO commandstats`` (Lua-internal calls included).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import redis

from bench import cf_tasks, common
from orchestrator import cache

NAME = "cache"
TITLE = "8. Cache (skip unchanged work)"
WIDTH, DEPTH = 100, 10
TARGET_S = 0.3


@contextlib.contextmanager
def round_trips() -> Iterator[list[int]]:
    """Count requests sent by this process (one per command, pipeline or transaction)."""
    count = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        count[0] += 1
        return original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def _run(client: Any, r: redis.Redis, pipeline: Any) -> dict[str, Any]:
    n = len(pipeline.nodes)
    before = common.commandstats(r)
    with round_trips() as rt:
        t0w = time.time()
        t0 = common.now()
        run_id = client.submit(pipeline)
        submit = common.now() - t0
        snap = client.wait(run_id, timeout_s=600, poll_s=0.02, detail=False)
    after = common.commandstats(r)
    if snap.state != "succeeded":
        raise RuntimeError(f"cache run {run_id} ended {snap.state}")
    counts = snap.counts()
    return {"run_id": run_id, "submit_s": submit, "e2e_s": float(snap.meta["finished_at"]) - t0w,
            "round_trips": rt[0], "cached": counts.get("cached", 0), "ran": counts.get("succeeded", 0),
            "cmd": common.commandstats_diff(before, after, n)}  # fmt: skip


def _wait_indexed(r: redis.Redis, client: Any, pipeline: Any, timeout_s: float = 60) -> None:
    """Entries are written just after each node settles (after its artifacts): wait for all of them
    (one per distinct fingerprint: the 100 roots are the same computation, so they share one)."""
    from orchestrator.fingerprint import fingerprint_plan

    n = len({f.digest for f in fingerprint_plan(pipeline, client.plan(pipeline)).values()})
    deadline = time.monotonic() + timeout_s
    while len(cache.scan(r)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError("cache entries were not all written")
        time.sleep(0.05)


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    from orchestrator.client import Client

    client = Client(stack.settings().model_copy(update={"use_cache": True}))
    r = stack.r(0)
    n = WIDTH * DEPTH
    changed = frozenset(range(max(1, WIDTH // 100)))
    cache.clear(r)
    first = cf_tasks.layered_keyed(WIDTH, DEPTH)
    fill = _run(client, r, first)
    common.log(f"cache fill: {fill['ran']} ran in {fill['e2e_s']:.2f}s")
    _wait_indexed(r, client, first)
    s = {"cached": common.Samples(), "changed": common.Samples()}
    runs: dict[str, list[dict[str, Any]]] = {"cached": [], "changed": []}
    for rep in range(cfg.repeat):
        for kind in ("cached", "changed"):
            p = cf_tasks.layered_keyed(WIDTH, DEPTH, changed if kind == "changed" else frozenset(), key=rep + 1)
            out = _run(client, r, p)
            if kind == "cached" and out["cached"] != n:
                raise RuntimeError(f"expected {n} cached, got {out['cached']} ({out['ran']} ran)")
            s[kind].add(e2e_s=out["e2e_s"], submit_s=out["submit_s"], ran=out["ran"],
                        round_trips_per_node=out["round_trips"] / n,
                        cmds_per_node=out["cmd"]["total_per_task"])  # fmt: skip
            runs[kind].append(out)
            common.log(f"cache {kind} rep {rep + 1}: e2e {out['e2e_s'] * 1e3:.0f} ms, {out['ran']} ran, "
                       f"{out['round_trips']} round trips")  # fmt: skip
    stack.clean_artifacts()
    return {"n": n, "changed_roots": len(changed), "fill_e2e_s": fill["e2e_s"],
            **{k: v.summaries() for k, v in s.items()}, "runs": runs}  # fmt: skip


def report(data: dict[str, Any], cfg: common.Config) -> tuple[str, list[dict[str, Any]]]:
    c, ch = data.get("cached", {}), data.get("changed", {})
    med = (c.get("e2e_s") or {}).get("median")
    ok = None if med is None else med <= TARGET_S
    lines = [
        f"### {TITLE}: layered {WIDTH}x{DEPTH} = {data['n']} cacheable no-ops",
        "",
        "| run | end to end (s) | submit (s) | tasks run | round trips per node | Redis commands per node |",
        "|---|---|---|---|---|---|",
        f"| fully cached | {common.fmt(c.get('e2e_s'))} | {common.fmt(c.get('submit_s'))} | "
        f"{common.fmt(c.get('ran'))} | "
        f"{common.fmt(c.get('round_trips_per_node'), 4)} | {common.fmt(c.get('cmds_per_node'))} |",
        f"| {data['changed_roots']} root(s) changed (1 %) | {common.fmt(ch.get('e2e_s'))} | "
        f"{common.fmt(ch.get('submit_s'))} | {common.fmt(ch.get('ran'))} | "
        f"{common.fmt(ch.get('round_trips_per_node'), 4)} | {common.fmt(ch.get('cmds_per_node'))} |",
        "",
        f"Target: fully cached run ≤ {TARGET_S} s end to end: {common.status(ok)}. The first (filling) run took "
        f"{data['fill_e2e_s']:.2f} s.",
        "",
    ]
    return "\n".join(lines), [{"scenario": NAME, "target": f"fully cached 1,000 nodes ≤ {TARGET_S} s", "value": med,
                               "pass": ok}]  # fmt: skip
