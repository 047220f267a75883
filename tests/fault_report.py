"""The ``FAULT {json}`` lines of the fault suite, also appended to the file docs/RELIABILITY.md is built from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def record(fig: dict[str, Any]) -> dict[str, Any]:
    """Print one ``FAULT {json}`` line and append it to the results file docs/RELIABILITY.md is built from."""
    print("FAULT " + json.dumps(fig))
    results = Path(os.environ.get("CHORDFLOW_FAULT_RESULTS", REPO / "artifacts" / "fault-results.jsonl"))
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as fh:
        fh.write(json.dumps(fig) + "\n")
    return fig
