"""The ETL example pipeline: synthetic sales orders to a markdown report.

``pipeline.toml`` declares it as a file; :func:`build_pipeline` builds the
same graph in Python, for code that wants to tweak it before running::

    ingest -> clean -> by_region, by_product, daily_revenue
    by_region, by_product -> join
    join, daily_revenue -> report

The step modules are imported as modules (not ``from ... import fn``) so the
package attribute ``tasks.etl.clean`` stays the module, as tools that resolve
dotted paths attribute by attribute expect.
"""

from __future__ import annotations

from orchestrator import Pipeline
from tasks.etl import aggregate, clean, ingest, join, report


def build_pipeline() -> Pipeline:
    """The ETL pipeline with the same nodes, dependencies and params as ``pipeline.toml``."""
    return (
        Pipeline("etl")
        .add_task(ingest.ingest, params={"rows": 20000, "bad_row_rate": 0.02, "seed": 42})
        .add_task(clean.clean, depends_on=["ingest"], params={"max_error_rate": 0.1})
        .add_task(aggregate.by_region, depends_on=["clean"])
        .add_task(aggregate.by_product, depends_on=["clean"])
        .add_task(aggregate.daily_revenue, depends_on=["clean"], params={"slow_s": 2.0})
        .add_task(join.join, depends_on=["by_region", "by_product"], params={"tolerance": 0.01})
        .add_task(report.report, depends_on=["join", "daily_revenue"], params={"title": "Sales orders report"})
    )
