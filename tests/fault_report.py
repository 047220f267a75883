"""The ``FAULT {json}`` lines of the fault suite, and the file docs/RELIABILITY.md is built from.

A figure is only *kept* when its test passes: :func:`record` prints it and holds it
for the current test; the root conftest writes the held figures to the results
file after the test's call phase passed, and drops them otherwise. So a failing
run can never become a published figure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_PENDING: list[dict[str, Any]] = []


def record(fig: dict[str, Any]) -> dict[str, Any]:
    """Print one ``FAULT {json}`` line; it is kept in the results file only if the test passes."""
    print("FAULT " + json.dumps(fig))
    _PENDING.append(fig)
    return fig


def results_path() -> Path:
    return Path(os.environ.get("CHORDFLOW_FAULT_RESULTS", REPO / "artifacts" / "fault-results.jsonl"))


def settle(passed: bool) -> int:
    """After a test: keep its figures if it passed, drop them if not; returns how many were kept."""
    figs, _PENDING[:] = list(_PENDING), []
    if not passed or not figs:
        return 0
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for fig in figs:
            fh.write(json.dumps(fig) + "\n")
    return len(figs)
