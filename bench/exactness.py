"""Scenario 4 — exactness: a non-series-parallel DAG (see ``bench.cf_tasks.exactness``) where S
sleeps ``slow_s`` and a chain C1..Cn of short sleeps depends only on the fast root A; J joins A
and S; F joins J and Cn. Makespan (submit -> last task done) against the critical path.

raw Celery, best honest encoding: ``chain(chord([S, chain(A, C1..Cn)], J), F)`` (series-parallel:
J over-constrained to also wait for Cn, harmless here because Cn finishes before S).
raw Celery, level-synchronised (what a generic layered encoding does): layers {A,S}, {C1,J},
{C2}..{Cn}, {F}, shown for reference. Dask: the exact DAG as futures.
"""

from __future__ import annotations

from typing import Any

from bench import cf_tasks, common, dask_peer
from bench import raw_celery_app as rc

NAME = "exactness"
TITLE = "4. Exactness"


def _shape(cfg: common.Config) -> tuple[float, int, float]:
    return cfg.exact_slow_s, cfg.exact_chain_n, cfg.exact_short_s


def measure_celery(stack: common.Stack, cfg: common.Config) -> dict[str, Any]:
    slow, n, short = _shape(cfg)
    pipeline = cf_tasks.exactness(slow, n, short)
    systems = ["chordflow", "raw_chord", "raw_levelled"]
    s = {k: common.Samples() for k in systems}
    for rep in range(cfg.repeat):
        for system in common.alternate(rep, systems):
            if system == "chordflow":
                out = common.cf_run(stack, pipeline)
            elif system == "raw_chord":
                out = common.raw_run(stack, rc.exactness_chord(slow, n, short), n + 4)
            else:
                out = common.raw_run(stack, rc.exactness_levelled(slow, n, short), n + 5)
            s[system].add(makespan_s=out["e2e_s"])
            common.log(f"exactness {system} rep {rep + 1}: makespan {out['e2e_s']:.3f}s")
    return {
        "slow_s": slow,
        "chain_n": n,
        "short_s": short,
        "critical_path_s": cf_tasks.critical_path_s(slow, n, short),
        **{k: v.summaries() for k, v in s.items()},
    }


def measure_dask(client: Any, cfg: common.Config) -> dict[str, Any]:
    s = common.Samples()
    for _ in range(cfg.repeat):
        s.add(makespan_s=dask_peer.exactness(client, *_shape(cfg))["e2e_s"])
    return s.summaries()


def report(data: dict[str, Any], cfg: common.Config) -> tuple[str, list[dict[str, Any]]]:
    cp = data["critical_path_s"]
    cols = [("chordflow (exact DAG)", "chordflow"), ("raw Celery chord encoding", "raw_chord"),
            ("raw Celery level-synchronised", "raw_levelled"), ("Dask futures (exact DAG)", "dask")]  # fmt: skip
    lines = [
        f"### {TITLE}: slow branch {data['slow_s']} s, chain of {data['chain_n']} × {data['short_s']} s on a fast "
        f"root; critical path {cp:.2f} s",
        "",
        "| | " + " | ".join(c for c, _ in cols) + " |",
        "|---|" + "---|" * len(cols),
        "| makespan (s) | " + " | ".join(common.fmt(data.get(k, {}).get("makespan_s")) for _, k in cols) + " |",
        "| makespan ÷ critical path | "
        + " | ".join(_over(data.get(k, {}).get("makespan_s"), cp) for _, k in cols)
        + " |",
        "",
    ]
    m = data.get("chordflow", {}).get("makespan_s")
    ok = None if not m else m["median"] <= cp * 1.10
    worst_ok = None if not m else m["max"] <= cp * 1.10
    lines += [
        f"Target: chordflow makespan ≤ critical path + 10 % = {cp * 1.1:.2f} s: median {common.status(ok)}, "
        f"worst repetition {common.status(worst_ok)}.",
        "",
        "DAG: roots A (no-op) and S (sleep); C1 → … → Cn (short sleeps) hang off A only; J joins A and S; F joins "
        "J and Cn. Raw Celery cannot express it exactly. *Chord encoding* (the best honest one): "
        "`chain(chord([S, chain(A, C1, …, Cn)], J), F)`, where J also waits for Cn (harmless here, Cn ends before "
        "S). *Level-synchronised*: `chain(group(A, S), barrier, group(C1, J), C2, …, Cn, F)`, what a generic "
        "layer-by-layer encoding does. Makespan = from just before submit to the end of F.",
        "",
    ]
    value = None if not m else m["median"] / cp
    check = {"scenario": NAME, "target": "makespan ≤ critical path + 10 %", "value": value, "pass": ok}
    return "\n".join(lines), [check]


def _over(s: dict[str, Any] | None, cp: float) -> str:
    if not s or not s.get("n"):
        return "–"
    return f"{s['median'] / cp:.3f}"
