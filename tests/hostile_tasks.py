"""Tasks that misbehave on purpose, for the input-limit and hostile-input tests (workers import this module)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from orchestrator import task


class Reading(BaseModel):
    value: float


class BadStr(Exception):
    """An exception whose message cannot even be rendered."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


@task(name="tests.nan_dict")
def nan_dict() -> Any:
    """Returns a plain value holding NaN (json.dumps would write invalid JSON)."""
    return {"value": float("nan")}


@task(name="tests.inf_model")
def inf_model() -> Reading:
    """Returns a model holding Infinity (pydantic would write null)."""
    return Reading(value=float("inf"))


@task(name="tests.bad_str")
def bad_str() -> None:
    raise BadStr()


@task(name="tests.markup_error")
def markup_error() -> None:
    raise ValueError("closing tag [/] and [bold]markup[/bold] and \x1b[31mescape")
