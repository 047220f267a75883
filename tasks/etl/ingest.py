"""Step 1: produce the raw orders file.

Real pipelines start from an export or an API; this one generates a seeded,
synthetic CSV so the example runs anywhere and gives the same data each run.
A small share of rows is deliberately malformed so ``clean`` has work to do.
"""

from __future__ import annotations

import csv
import random
from datetime import timedelta

from orchestrator import TaskContext, task
from tasks.etl.models import IngestConfig, IngestResult

COLUMNS = ["order_id", "order_date", "region", "product", "quantity", "unit_price", "customer_email"]
REGIONS = {"North": 0.30, "South": 0.25, "East": 0.20, "West": 0.15, "Central": 0.10}  # region -> share of orders
PRODUCTS = {  # product -> list price
    "Widget": 4.99,
    "Gadget": 12.50,
    "Gizmo": 24.00,
    "Doohickey": 7.25,
    "Sprocket": 2.10,
    "Thingamajig": 49.90,
}
PROGRESS_EVERY = 2_000


def _corrupt(row: list[str], rng: random.Random) -> None:
    """Break one field of ``row`` in a way a real export might (each caught by ``clean``)."""
    kind = rng.randrange(7)
    if kind == 0:
        row[4] = str(-rng.randint(1, 5))  # negative quantity
    elif kind == 1:
        row[4] = rng.choice(["three", "", "2.5"])  # quantity that is not an integer
    elif kind == 2:
        row[2] = ""  # missing region
    elif kind == 3:
        row[5] = rng.choice(["N/A", "12,50", "", "$9.99"])  # unparseable price
    elif kind == 4:
        row[5] = "-" + row[5]  # negative price
    elif kind == 5:
        row[1] = rng.choice(["2024-02-30", "31/01/2024", "yesterday"])  # unparseable date
    else:
        row[6] = row[6].replace("@", " at ")  # not an e-mail address


@task(version="1")
def ingest(config: IngestConfig, ctx: TaskContext) -> IngestResult:
    """Write ``orders.csv`` with ``config.rows`` synthetic sales orders."""
    rng = random.Random(config.seed)
    products = list(PRODUCTS)
    regions, weights = list(REGIONS), list(REGIONS.values())
    total = max(config.rows, 1)
    path = ctx.output_dir / "orders.csv"
    bad = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i in range(1, config.rows + 1):
            product = rng.choice(products)
            price = PRODUCTS[product] * rng.uniform(0.9, 1.1)  # discounts and surcharges
            row = [
                f"ORD-{i:07d}",
                (config.start_date + timedelta(days=rng.randrange(config.days))).isoformat(),
                rng.choices(regions, weights)[0],
                product,
                str(min(int(rng.expovariate(0.3)) + 1, 50)),  # mostly small orders, a few large
                f"{price:.2f}",
                f"customer{rng.randint(1, 5000):04d}@example.com",
            ]
            if rng.random() < config.bad_row_rate:
                _corrupt(row, rng)
                bad += 1
            writer.writerow(row)
            if i % PROGRESS_EVERY == 0:
                ctx.progress(i, total)
    ctx.progress(total, total)
    ctx.log.info("ingest.written", path=str(path), rows=config.rows, injected_bad_rows=bad)
    return IngestResult(path=path, row_count=config.rows, injected_bad_rows=bad)
