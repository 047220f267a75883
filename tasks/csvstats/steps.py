"""The steps of the map example (see ``tasks/csvstats/__init__.py``)."""

from __future__ import annotations

import csv
import io
import os
import random
from pathlib import Path

from pydantic import BaseModel, Field

from orchestrator import MapResults, TaskContext, task

REGIONS = ("north", "south", "east", "west", "central")
PROGRESS_EVERY = 10_000


class GenerateConfig(BaseModel):
    rows: int = Field(1_000_000, ge=0, le=50_000_000)
    seed: int = 7


class CsvFile(BaseModel):
    path: Path
    bytes: int
    rows: int


class SplitConfig(BaseModel):
    chunk_bytes: int = Field(1_000_000, ge=1_000, description="target size of one chunk")


class ByteRange(BaseModel):
    """A chunk descriptor: ``[start, end)`` of the file, aligned to line ends."""

    path: Path
    start: int
    end: int


class RegionStats(BaseModel):
    rows: int = 0
    amount: float = 0.0
    min_amount: float | None = None
    max_amount: float | None = None


class ChunkStats(BaseModel):
    rows: int
    by_region: dict[str, RegionStats]


class Stats(BaseModel):
    rows: int
    chunks: int
    failed_chunks: list[int]
    by_region: dict[str, RegionStats]


@task(name="csvstats.generate", version="1")
def generate(config: GenerateConfig, ctx: TaskContext) -> CsvFile:
    """A synthetic orders CSV: id, region, amount (deterministic for a seed)."""
    rnd = random.Random(config.seed)
    path = ctx.output_dir / "orders.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("id,region,amount\n")
        for start in range(0, config.rows, PROGRESS_EVERY * 10):
            stop = min(config.rows, start + PROGRESS_EVERY * 10)
            f.write("".join(f"{i},{rnd.choice(REGIONS)},{rnd.randint(100, 99_999) / 100:.2f}\n"
                            for i in range(start, stop)))  # fmt: skip
            ctx.progress(stop, config.rows)
    return CsvFile(path=path, bytes=path.stat().st_size, rows=config.rows)


@task(name="csvstats.split", version="1")
def split(config: SplitConfig, generate: CsvFile) -> list[ByteRange]:
    """Byte ranges of about ``chunk_bytes``, each ending at a line end (the header is skipped)."""
    ranges = []
    with generate.path.open("rb") as f:
        f.readline()
        start = f.tell()
        while start < generate.bytes:
            f.seek(min(start + config.chunk_bytes, generate.bytes))
            f.readline()  # to the end of the line the cut fell in
            end = min(f.tell(), generate.bytes)
            ranges.append(ByteRange(path=generate.path, start=start, end=end))
            start = end
    return ranges


@task(name="csvstats.parse", version="1")
def parse(split: ByteRange, ctx: TaskContext) -> ChunkStats:
    """One byte range: per-region row count, total, min and max amount; rows reported as progress."""
    with split.path.open("rb") as f:
        f.seek(split.start)
        data = f.read(split.end - split.start).decode("utf-8")
    acc: dict[str, list[float]] = {}
    rows = 0
    for row in csv.reader(io.StringIO(data)):
        if len(row) != 3:
            continue
        amount = float(row[2])
        a = acc.setdefault(row[1], [0, 0.0, amount, amount])
        a[0] += 1
        a[1] += amount
        a[2] = min(a[2], amount)
        a[3] = max(a[3], amount)
        rows += 1
        if rows % PROGRESS_EVERY == 0:
            ctx.progress(rows, rows + 1)
    ctx.progress(rows, rows)
    by_region = {r: RegionStats(rows=int(a[0]), amount=a[1], min_amount=a[2], max_amount=a[3]) for r, a in acc.items()}
    return ChunkStats(rows=rows, by_region=by_region)


@task(name="csvstats.stats", version="1")
def stats(parse: MapResults[ChunkStats]) -> Stats:
    """Merge the chunks' statistics, streamed in input order (never all in memory at once)."""
    total = 0
    merged: dict[str, RegionStats] = {}
    for chunk in parse:
        total += chunk.rows
        for region, s in chunk.by_region.items():
            m = merged.setdefault(region, RegionStats())
            m.rows += s.rows
            m.amount = round(m.amount + s.amount, 2)
            m.min_amount = s.min_amount if m.min_amount is None else min(m.min_amount, s.min_amount or m.min_amount)
            m.max_amount = s.max_amount if m.max_amount is None else max(m.max_amount, s.max_amount or m.max_amount)
    return Stats(rows=total, chunks=len(parse), failed_chunks=[f.index for f in parse.failed],
                 by_region=dict(sorted(merged.items())))  # fmt: skip


@task(name="csvstats.report", version="1")
def report(stats: Stats, ctx: TaskContext) -> dict[str, str]:
    """A Markdown report next to the run's other outputs."""
    lines = [f"# Orders by region\n\n{stats.rows:,} rows in {stats.chunks} chunks\n",
             "| region | rows | total amount | min | max |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for region, s in stats.by_region.items():
        lines.append(f"| {region} | {s.rows:,} | {s.amount:,.2f} | {s.min_amount:.2f} | {s.max_amount:.2f} |")
    path = ctx.output_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"report": os.fspath(path)}
