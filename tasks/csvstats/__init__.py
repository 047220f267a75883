"""The map example: statistics over a large CSV, split into byte ranges processed on any worker.

    generate -> split -> parse (a map: one chunk per byte range) -> stats (the reduce) -> report

``generate`` writes a synthetic CSV (1,000,000 rows by default, nothing downloaded); ``split`` cuts
it into byte ranges aligned to line ends, a list whose length is known only then; ``parse`` runs
once per range, on whichever worker is free, and reports its rows as progress; ``stats`` merges the
per-range statistics in input order without holding them all at once; ``report`` writes Markdown.
``tasks/csvstats/pipeline.toml`` declares the same graph (``make demo-map`` runs it).
"""

from __future__ import annotations

from orchestrator import Pipeline
from tasks.csvstats import steps


def build_pipeline(rows: int = 1_000_000, chunk_bytes: int = 1_000_000) -> Pipeline:
    return (
        Pipeline("csvstats")
        .add_task(steps.generate, params={"rows": rows})
        .add_task(steps.split, depends_on=["generate"], params={"chunk_bytes": chunk_bytes})
        .add_map(steps.parse, over="split", max_in_flight=8)
        .add_task(steps.stats, depends_on=["parse"])
        .add_task(steps.report, depends_on=["stats"])
    )
