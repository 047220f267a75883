"""Step 4: bring the region and product views together into one summary.

It needs only ``by_region`` and ``by_product``, not ``daily_revenue``, so it
runs while the slow daily aggregation is still going. Both views are sums of
the same clean rows, so their revenue totals must agree: a difference means
one aggregation dropped or double-counted rows, and the report would be wrong.
"""

from __future__ import annotations

from orchestrator import TaskContext, task
from tasks.etl.models import ByProductResult, ByRegionResult, JoinConfig, JoinResult


@task(version="1")
def join(config: JoinConfig, by_region: ByRegionResult, by_product: ByProductResult, ctx: TaskContext) -> JoinResult:
    """Top region, top product and totals, after checking the two revenue totals agree.

    Raises:
        ValueError: the two totals differ by more than ``config.tolerance``.
    """
    difference = round(abs(by_region.total_revenue - by_product.total_revenue), 6)
    if difference > config.tolerance:
        raise ValueError(
            f"revenue by region ({by_region.total_revenue:.2f}) and by product "
            f"({by_product.total_revenue:.2f}) differ by {difference:.2f}, more than {config.tolerance}"
        )
    top_region = max(by_region.regions, key=lambda t: t.revenue, default=None)
    top_product = max(by_product.products, key=lambda t: t.revenue, default=None)
    result = JoinResult(
        regions=by_region.regions,
        products=by_product.products,
        top_region=top_region.region if top_region else None,
        top_product=top_product.product if top_product else None,
        total_orders=by_region.total_orders,
        total_units=by_product.total_units,
        total_revenue=by_region.total_revenue,
        revenue_difference=difference,
    )
    ctx.log.info(
        "join.done",
        top_region=result.top_region,
        top_product=result.top_product,
        total_revenue=result.total_revenue,
        revenue_difference=difference,
    )
    return result
