"""Step 3: three independent aggregations over ``clean.csv``.

Each is its own task so they run side by side on different workers and each
can be retried or re-run alone. ``daily_revenue`` is made slow on purpose
(``slow_s``): in a run, ``join`` starts as soon as ``by_region`` and
``by_product`` are done, without waiting for it.
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from orchestrator import TaskContext, task
from tasks.etl.models import (
    ByProductResult,
    ByRegionResult,
    CleanResult,
    DailyRevenueConfig,
    DailyRevenueResult,
    DayTotal,
    ProductTotal,
    RegionTotal,
)

PROGRESS_EVERY = 1_000
SLOW_STEPS = 20  #: daily_revenue's delay is spread over this many pauses, so its progress bar moves


def _rows(clean: CleanResult, ctx: TaskContext) -> Iterator[dict[str, str]]:
    """The rows of the clean file, reporting progress along the way."""
    total = max(clean.row_count, 1)
    with clean.path.open(newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), 1):
            yield row
            if i % PROGRESS_EVERY == 0:
                ctx.progress(min(i, total), total)
    ctx.progress(total, total)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@task(version="1")
def by_region(clean: CleanResult, ctx: TaskContext) -> ByRegionResult:
    """Orders and revenue per region, highest revenue first."""
    orders: dict[str, int] = defaultdict(int)
    revenue: dict[str, float] = defaultdict(float)
    for row in _rows(clean, ctx):
        orders[row["region"]] += 1
        revenue[row["region"]] += float(row["revenue"])
    regions = sorted(
        (RegionTotal(region=r, orders=orders[r], revenue=round(revenue[r], 2)) for r in orders),
        key=lambda t: (-t.revenue, t.region),
    )
    path = ctx.output_dir / "by_region.csv"
    _write_csv(path, ["region", "orders", "revenue"], [[t.region, t.orders, f"{t.revenue:.2f}"] for t in regions])
    result = ByRegionResult(
        path=path,
        regions=regions,
        total_orders=sum(orders.values()),
        total_revenue=round(sum(revenue.values()), 2),
    )
    ctx.log.info("by_region.done", regions=len(regions), total_revenue=result.total_revenue)
    return result


@task(version="1")
def by_product(clean: CleanResult, ctx: TaskContext) -> ByProductResult:
    """Units sold and revenue per product, highest revenue first."""
    units: dict[str, int] = defaultdict(int)
    revenue: dict[str, float] = defaultdict(float)
    for row in _rows(clean, ctx):
        units[row["product"]] += int(row["quantity"])
        revenue[row["product"]] += float(row["revenue"])
    products = sorted(
        (ProductTotal(product=p, units=units[p], revenue=round(revenue[p], 2)) for p in units),
        key=lambda t: (-t.revenue, t.product),
    )
    path = ctx.output_dir / "by_product.csv"
    _write_csv(path, ["product", "units", "revenue"], [[t.product, t.units, f"{t.revenue:.2f}"] for t in products])
    result = ByProductResult(
        path=path,
        products=products,
        total_units=sum(units.values()),
        total_revenue=round(sum(revenue.values()), 2),
    )
    ctx.log.info("by_product.done", products=len(products), total_revenue=result.total_revenue)
    return result


@task(version="1")
def daily_revenue(config: DailyRevenueConfig, clean: CleanResult, ctx: TaskContext) -> DailyRevenueResult:
    """Orders and revenue per calendar day; deliberately takes ``config.slow_s`` longer."""
    pause_every = max(clean.row_count // SLOW_STEPS, 1)
    pauses = max(clean.row_count // pause_every, 1)  # how often i % pause_every == 0 below
    pause_s = config.slow_s / pauses
    slept = 0.0
    orders: dict[date, int] = defaultdict(int)
    revenue: dict[date, float] = defaultdict(float)
    for i, row in enumerate(_rows(clean, ctx), 1):
        day = date.fromisoformat(row["order_date"])
        orders[day] += 1
        revenue[day] += float(row["revenue"])
        if i % pause_every == 0 and pause_s:
            time.sleep(pause_s)
            slept += pause_s
    if config.slow_s - slept > 1e-9:  # fewer rows than expected: still honour slow_s
        time.sleep(config.slow_s - slept)
    days = [DayTotal(day=d, orders=orders[d], revenue=round(revenue[d], 2)) for d in sorted(orders)]
    path = ctx.output_dir / "daily_revenue.csv"
    _write_csv(path, ["day", "orders", "revenue"], [[t.day.isoformat(), t.orders, f"{t.revenue:.2f}"] for t in days])
    result = DailyRevenueResult(
        path=path,
        days=days,
        total_orders=sum(orders.values()),
        total_revenue=round(sum(revenue.values()), 2),
    )
    ctx.log.info("daily_revenue.done", days=len(days), total_revenue=result.total_revenue)
    return result
