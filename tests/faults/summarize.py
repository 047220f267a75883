"""Turn the ``FAULT`` lines of the last fault-suite run into docs/RELIABILITY.md's table.

python -m pytest tests/faults -q          # appends to artifacts/fault-results.jsonl
python -m tests.faults.summarize          # rewrites the table in docs/RELIABILITY.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "artifacts" / "fault-results.jsonl"
DOC = REPO / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- fault-table:begin -->", "<!-- fault-table:end -->"
MAIN = ("state", "nodes", "lost", "extra_exec", "double_trigger")


def _order(name: str) -> tuple[int, str]:
    """Scenario number first ("18-19 ..." sorts as 18), then name; unnumbered rows last."""
    head = re.match(r"\d+", name)
    return (int(head.group()) if head else 10_000, name)


def table(lines: list[dict]) -> str:
    latest: dict[str, dict] = {}
    for fig in lines:
        latest[fig["scenario"]] = fig  # the last run of each scenario wins
    rows = ["| scenario | final state | nodes | lost | extra executions | double triggers | other figures |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in sorted(latest, key=_order):
        fig = latest[name]
        other = ", ".join(f"{k}={v}" for k, v in fig.items() if k not in (*MAIN, "scenario", "run_id",
                                                                          "extra_exec_unfaulted"))  # fmt: skip
        cells = [str(fig.get(k, "–")) for k in MAIN]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {other} |")
    return "\n".join(rows)


def main() -> int:
    if not RESULTS.exists():
        print(f"no results at {RESULTS}: run the fault suite first", file=sys.stderr)
        return 2
    lines = [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()]
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + table(lines) + "\n" + text[end:])
    print(f"updated {DOC} from {len(lines)} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
