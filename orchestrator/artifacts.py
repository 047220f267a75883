"""Where a task's outputs go: ``<artifact_root>/<node>/v<version>/<run_id>/``.

Each successful task gets ``result.json`` and ``metadata.json`` there; each
failure gets ``errors/<run_id>/<node>-<attempt>.json`` and a line in
``failed_tasks.log`` (both under the artifact root).
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

from orchestrator.errors import ChordflowError

SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


class UnsafePath(ChordflowError):
    """An artifact path would land outside the artifact root."""


@functools.lru_cache(maxsize=16)
def _resolved(root: Path) -> Path:
    return root.resolve()


def safe_path(root: Path, *parts: str) -> Path:
    """``root/part/...``, refusing traversal (``..``, separators, NUL) and symlinks that lead outside ``root``."""
    for part in parts:
        if not SAFE_PART.fullmatch(part) or ".." in part:
            raise UnsafePath(f"unsafe path component {part!r}")
    path = root.joinpath(*parts)
    base = _resolved(root)
    resolved = Path(os.path.realpath(path))
    if resolved != base and base not in resolved.parents:
        raise UnsafePath(f"{path} resolves to {resolved}, outside the artifact root {base}")
    return path


def task_dir(root: Path, node: str, version: str, run_id: str) -> Path:
    return safe_path(root, node, f"v{version}", run_id)


def error_report_path(root: Path, run_id: str, node: str, attempt: int) -> Path:
    return safe_path(root, "errors", run_id, f"{node}-{attempt}.json")


def failed_log_path(root: Path) -> Path:
    return root / "failed_tasks.log"


def write_json(path: Path, data: Any, pretty: bool = True) -> None:
    """Write atomically (temp file + rename) so readers never see half a file."""
    os.makedirs(path.parent, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2 if pretty else None, sort_keys=pretty, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
