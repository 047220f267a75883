"""Artifact retention: ``chordflow gc --older-than DAYS``.

Deletes run directories under the artifact root (``<pipeline>/<node>/v<version>/<run_id>/``,
``<pipeline>/runs/<run_id>/``, ``errors/<run_id>/``) last modified before the cutoff. A cache
entry that pointed into a deleted directory becomes a miss at the next submit (never a broken
run), so gc needs no coordination with the cache index.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from orchestrator.store import RUN_ID_RE

MAX_DEPTH = 4  #: <pipeline>/<node>/v<version>/<run_id>


def collect(root: Path, older_than_s: float, dry_run: bool = False) -> list[Path]:
    """Remove (or, with ``dry_run``, list) run directories older than ``older_than_s``; never follows symlinks."""
    cutoff = time.time() - older_than_s
    doomed: list[Path] = []
    if not root.is_dir():
        return doomed
    stack = [(root, 0)]
    while stack:
        path, depth = stack.pop()
        with os.scandir(path) as it:
            for entry in it:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if RUN_ID_RE.fullmatch(entry.name):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        doomed.append(Path(entry.path))
                elif depth < MAX_DEPTH and entry.name != "logs":
                    stack.append((Path(entry.path), depth + 1))
    for path in sorted(doomed):
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
    return sorted(doomed)
