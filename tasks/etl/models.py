"""Configs and results of the ETL example, in one place.

Configs forbid unknown fields so a misspelt param in ``pipeline.toml`` is a
validation error, not a silently ignored default. Results carry only small,
JSON-friendly data (paths and totals); the bulk data stays in CSV files.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- configs ------------------------------------------------------------------------------------


class IngestConfig(_Config):
    rows: int = Field(20_000, ge=0, le=10_000_000, description="orders to generate")
    bad_row_rate: float = Field(0.02, ge=0, le=1, description="share of rows given one malformed field")
    seed: int = Field(42, description="same seed, same file")
    start_date: date = Field(date(2024, 1, 1), description="first possible order date")
    days: int = Field(90, ge=1, le=3660, description="order dates fall in [start_date, start_date + days)")


class CleanConfig(_Config):
    max_error_rate: float = Field(0.1, ge=0, le=1, description="fail if a larger share of rows is rejected")


class DailyRevenueConfig(_Config):
    slow_s: float = Field(2.0, ge=0, le=600, description="artificial delay, to show branches run in parallel")


class JoinConfig(_Config):
    tolerance: float = Field(0.01, ge=0, description="allowed difference between the two revenue totals")


class ReportConfig(_Config):
    title: str = Field("Sales orders report", min_length=1)
    top_days: int = Field(5, ge=0, le=100, description="how many best days to list")
    tolerance: float = Field(0.01, ge=0, description="allowed difference between summary and daily totals")


# -- results ------------------------------------------------------------------------------------


class IngestResult(BaseModel):
    path: Path
    row_count: int
    injected_bad_rows: int


class CleanResult(BaseModel):
    path: Path
    rejects_path: Path
    row_count: int  #: valid rows written to clean.csv
    rejected: int
    error_rate: float  #: rejected / rows read


class RegionTotal(BaseModel):
    region: str
    orders: int
    revenue: float


class ProductTotal(BaseModel):
    product: str
    units: int
    revenue: float


class DayTotal(BaseModel):
    day: date
    orders: int
    revenue: float


class ByRegionResult(BaseModel):
    path: Path
    regions: list[RegionTotal]  #: by revenue, highest first
    total_orders: int
    total_revenue: float


class ByProductResult(BaseModel):
    path: Path
    products: list[ProductTotal]  #: by revenue, highest first
    total_units: int
    total_revenue: float


class DailyRevenueResult(BaseModel):
    path: Path
    days: list[DayTotal]  #: by date
    total_orders: int
    total_revenue: float


class JoinResult(BaseModel):
    regions: list[RegionTotal]
    products: list[ProductTotal]
    top_region: str | None
    top_product: str | None
    total_orders: int
    total_units: int
    total_revenue: float
    revenue_difference: float  #: |by_region total - by_product total|


class ReportResult(BaseModel):
    path: Path
    total_revenue: float
    total_orders: int
    top_region: str | None
    top_product: str | None
    best_day: date | None
