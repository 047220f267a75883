"""Step 5: the human-readable end product, ``report.md``.

Waits for both the summary (``join``) and the slow ``daily_revenue`` branch,
so this is where the two halves of the graph meet. Before writing it checks
that the daily totals agree with the summary, because a report whose tables
do not add up is worse than no report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import date, timedelta

from orchestrator import TaskContext, task
from tasks.etl.models import DailyRevenueResult, JoinResult, ReportConfig, ReportResult


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _table(header: list[str], rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    """A markdown table; columns whose index is in ``right`` are right-aligned (numbers)."""
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


@task(version="1")
def report(config: ReportConfig, join: JoinResult, daily_revenue: DailyRevenueResult, ctx: TaskContext) -> ReportResult:
    """Write ``report.md`` with headline numbers and region, product, weekly and best-day tables.

    Raises:
        ValueError: the daily totals disagree with the summary by more than ``config.tolerance``.
    """
    difference = round(abs(join.total_revenue - daily_revenue.total_revenue), 6)
    if difference > config.tolerance or join.total_orders != daily_revenue.total_orders:
        raise ValueError(
            f"daily totals ({daily_revenue.total_orders} orders, {daily_revenue.total_revenue:.2f}) do not match "
            f"the summary ({join.total_orders} orders, {join.total_revenue:.2f})"
        )
    total = join.total_revenue
    days = daily_revenue.days
    best = max(days, key=lambda d: d.revenue, default=None)

    weeks_orders: dict[date, int] = defaultdict(int)
    weeks_revenue: dict[date, float] = defaultdict(float)
    for d in days:
        monday = d.day - timedelta(days=d.day.weekday())
        weeks_orders[monday] += d.orders
        weeks_revenue[monday] += d.revenue

    lines = [
        f"# {config.title}",
        "",
        f"Run `{ctx.run_id}`"
        + (f", orders from {days[0].day.isoformat()} to {days[-1].day.isoformat()}." if days else "."),
        "",
        "## Headlines",
        "",
        *_table(
            ["Metric", "Value"],
            [
                ["Revenue", _money(total)],
                ["Orders", f"{join.total_orders:,}"],
                ["Units sold", f"{join.total_units:,}"],
                ["Average order value", _money(total / join.total_orders) if join.total_orders else "-"],
                ["Top region", join.top_region or "-"],
                ["Top product", join.top_product or "-"],
                ["Best day", f"{best.day.isoformat()} ({_money(best.revenue)})" if best else "-"],
            ],
        ),
        "## Revenue by region",
        "",
        *_table(
            ["Region", "Orders", "Revenue", "Share"],
            [[r.region, f"{r.orders:,}", _money(r.revenue), _share(r.revenue, total)] for r in join.regions],
            right={1, 2, 3},
        ),
        "## Revenue by product",
        "",
        *_table(
            ["Product", "Units", "Revenue", "Share"],
            [[p.product, f"{p.units:,}", _money(p.revenue), _share(p.revenue, total)] for p in join.products],
            right={1, 2, 3},
        ),
        "## Revenue by week",
        "",
        *_table(
            ["Week starting", "Orders", "Revenue"],
            [[w.isoformat(), f"{weeks_orders[w]:,}", _money(weeks_revenue[w])] for w in sorted(weeks_orders)],
            right={1, 2},
        ),
    ]
    if config.top_days:
        top = sorted(days, key=lambda d: (-d.revenue, d.day))[: config.top_days]
        lines += [
            f"## Best {len(top)} days",
            "",
            *_table(
                ["Day", "Orders", "Revenue"],
                [[d.day.isoformat(), f"{d.orders:,}", _money(d.revenue)] for d in top],
                right={1, 2},
            ),
        ]
    lines += [
        "## Checks",
        "",
        f"- Revenue by region and by product agree (difference {join.revenue_difference:.2f}).",
        f"- Daily revenue agrees with the summary (difference {difference:.2f}).",
        "",
    ]

    path = ctx.output_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    ctx.log.info("report.written", path=str(path), total_revenue=total)
    return ReportResult(
        path=path,
        total_revenue=total,
        total_orders=join.total_orders,
        top_region=join.top_region,
        top_product=join.top_product,
        best_day=best.day if best else None,
    )
