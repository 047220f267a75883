"""Where a task's outputs go: ``<artifact_root>/<pipeline>/<node>/v<version>/<run_id>/``.

The pipeline name is part of the path: two pipelines that both have a node ``fetch`` never share a
folder. A run's manifest goes to ``<artifact_root>/<pipeline>/runs/<run_id>/manifest.json``, so
``runs`` is reserved as a node name too.

Each successful task gets ``result.json`` and ``metadata.json`` there; each
failure gets ``errors/<run_id>/<node>-<attempt>.json`` and a line in
``failed_tasks.log`` (both under the artifact root). So node names ``errors``,
``logs`` and ``failed_tasks.log`` are reserved: a node must not take the place
of these. Files are created without following symlinks, and workers run with
a umask (``artifact_umask``, default 077) so results are private to their user.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from orchestrator.errors import ChordflowError

SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
FAILED_LOG = "failed_tasks.log"
#: top-level names under the artifact root that chordflow itself uses; no node may be named so
RESERVED_NAMES = frozenset({"errors", "logs", FAILED_LOG})
MAX_PART = 128
RUNS_DIR = "runs"  #: <root>/<pipeline>/runs/<run_id>/manifest.json


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
    # Only a symlink among the parts can lead out of the (resolved) root: look at them with lstat, stopping at
    # the first that does not exist yet (nothing below it to follow); the full realpath only if one is a link.
    current = str(base)
    for part in parts:
        current = os.path.join(current, part)
        try:
            if not stat.S_ISLNK(os.lstat(current).st_mode):
                continue
        except FileNotFoundError:
            return path
        except OSError:
            pass
        break
    else:
        return path
    resolved = Path(os.path.realpath(path))
    if resolved != base and base not in resolved.parents:
        raise UnsafePath(f"{path} resolves to {resolved}, outside the artifact root {base}")
    return path


def is_reserved(node: str) -> bool:
    return node.lower() in RESERVED_NAMES


def pipeline_part(pipeline: str) -> str:
    """The pipeline name as one safe path component: as is when it already is one, else its unsafe
    characters replaced and a short hash of the real name added (two names never share a folder)."""
    if SAFE_PART.fullmatch(pipeline) and ".." not in pipeline:
        return pipeline
    slug = re.sub(r"[^A-Za-z0-9_.\-]", "_", pipeline).replace("..", "_").lstrip(".-") or "_"
    return fit_name(slug[:100], "-" + hashlib.sha256(pipeline.encode()).hexdigest()[:8])


def pipeline_of(record: dict[str, Any]) -> str:
    """The pipeline a node record belongs to (its artifacts' folder); records from before C5 have none."""
    return str(record.get("pipeline") or "default")


def task_dir(root: Path, pipeline: str, node: str, version: str, run_id: str) -> Path:
    pipeline = pipeline_part(pipeline)
    if is_reserved(pipeline):
        raise UnsafePath(f"pipeline name {pipeline!r} is reserved under the artifact root (rename the pipeline)")
    if is_reserved(node) or node.lower() == RUNS_DIR:
        raise UnsafePath(f"task name {node!r} is reserved under the artifact root (rename the task)")
    return safe_path(root, pipeline, node, f"v{version}", run_id)


def manifest_path(root: Path, pipeline: str, run_id: str) -> Path:
    """The run-level manifest: every node's state, attempt, fingerprint and artifact path."""
    return safe_path(root, pipeline_part(pipeline), RUNS_DIR, run_id, "manifest.json")


def error_report_path(root: Path, run_id: str, node: str, attempt: int) -> Path:
    return safe_path(root, "errors", run_id, fit_name(node, f"-{attempt}.json"))


def fit_name(stem: str, suffix: str) -> str:
    """``stem + suffix``, with ``stem`` cut and given a hash suffix if the whole would exceed a path part."""
    if len(stem) + len(suffix) <= MAX_PART:
        return stem + suffix
    digest = hashlib.sha256(stem.encode()).hexdigest()[:12]
    return f"{stem[: MAX_PART - len(suffix) - 13]}_{digest}{suffix}"


def failed_log_path(root: Path) -> Path:
    return root / FAILED_LOG


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path``, never through a symlink (O_NOFOLLOW) and never truncating."""
    os.makedirs(path.parent, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")


def write_json(path: Path, data: Any, pretty: bool = True) -> None:
    """Write atomically (temp file + rename) so readers never see half a file."""
    os.makedirs(path.parent, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2 if pretty else None, sort_keys=pretty, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file created exclusively (a planted symlink or file there is replaced, never written through)."""
    tmp = f"{path}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def restrict_umask(umask: str) -> None:
    """Apply the worker's umask (octal text, e.g. ``077``): everything it and its tasks create is private."""
    os.umask(int(umask, 8))
