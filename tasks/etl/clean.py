"""Step 2: keep the rows that make sense, set the others aside.

Every row is validated against :class:`OrderRow`; valid rows go to
``clean.csv`` in a normalised form (ISO date, two-decimal price, a computed
``revenue`` column), invalid ones to ``rejects.csv`` with the reason, so a
person can see what was dropped and why. Too many rejects means the input is
broken rather than noisy, and the run should stop before reporting on it.
"""

from __future__ import annotations

import csv
from datetime import date

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator import PermanentError, RetryPolicy, TaskContext, task
from tasks.etl.models import CleanConfig, CleanResult, IngestResult

CLEAN_COLUMNS = ["order_id", "order_date", "region", "product", "quantity", "unit_price", "customer_email", "revenue"]
PROGRESS_EVERY = 1_000


class OrderRow(BaseModel):
    """One valid order line; CSV strings are coerced (``"3"`` -> 3), anything else is rejected."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    order_id: str = Field(pattern=r"^ORD-\d+$")
    order_date: date
    region: str = Field(min_length=1)
    product: str = Field(min_length=1)
    quantity: int = Field(gt=0)
    unit_price: float = Field(gt=0, allow_inf_nan=False)
    customer_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _reason(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return f"row: {exc}"
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors())


# One quick retry covers a transient read problem (the upstream file on shared storage not yet
# visible to this worker). A too-high error rate fails the same way again, costing only ~0.3 s.
@task(version="1", retry=RetryPolicy(attempts=2, backoff_s=0.2, jitter_s=0.1))
def clean(config: CleanConfig, ingest: IngestResult, ctx: TaskContext) -> CleanResult:
    """Split ``ingest``'s file into ``clean.csv`` and ``rejects.csv``.

    Raises:
        ValueError: the share of rejected rows is above ``config.max_error_rate``
            (both files are written first, so the rejects can be inspected).
    """
    out = ctx.output_dir
    clean_path, rejects_path = out / "clean.csv", out / "rejects.csv"
    total = max(ingest.row_count, 1)
    kept = rejected = seen = 0
    with (
        ingest.path.open(newline="", encoding="utf-8") as src,
        clean_path.open("w", newline="", encoding="utf-8") as good,
        rejects_path.open("w", newline="", encoding="utf-8") as bad,
    ):
        reader = csv.DictReader(src)
        good_writer = csv.writer(good)
        good_writer.writerow(CLEAN_COLUMNS)
        bad_writer = csv.DictWriter(bad, fieldnames=[*(reader.fieldnames or []), "error"], extrasaction="ignore")
        bad_writer.writeheader()
        for raw in reader:
            seen += 1
            extra = raw.pop(None, None)  # csv puts fields beyond the header under the key None
            try:
                if extra:
                    raise ValueError(f"{len(extra)} more field(s) than the header")
                row = OrderRow.model_validate(raw)
            except (ValidationError, ValueError) as exc:
                rejected += 1
                bad_writer.writerow({**raw, "error": _reason(exc)})
            else:
                kept += 1
                good_writer.writerow(
                    [
                        row.order_id,
                        row.order_date.isoformat(),
                        row.region,
                        row.product,
                        row.quantity,
                        f"{row.unit_price:.2f}",
                        row.customer_email,
                        f"{row.quantity * round(row.unit_price, 2):.2f}",
                    ]
                )
            if seen % PROGRESS_EVERY == 0:
                ctx.progress(min(seen, total), total)
    ctx.progress(total, total)

    error_rate = rejected / seen if seen else 0.0
    ctx.log.info("clean.done", rows=seen, kept=kept, rejected=rejected, error_rate=round(error_rate, 4))
    if error_rate > config.max_error_rate:
        # Permanent: the same data would fail the same way; retrying only wastes time.
        raise PermanentError(
            f"{rejected} of {seen} rows rejected (error rate {error_rate:.2%}), "
            f"above max_error_rate {config.max_error_rate:.2%}; see {rejects_path}"
        )
    return CleanResult(
        path=clean_path, rejects_path=rejects_path, row_count=kept, rejected=rejected, error_rate=error_rate
    )
