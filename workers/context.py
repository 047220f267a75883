"""The ``ctx`` a task function receives: run id, attempt, output dir, logger, progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.artifacts import task_dir
from orchestrator.redact import NO_SECRETS, Masker
from orchestrator.store import RunStore


class WorkerContext:
    """Implements :class:`orchestrator.context.TaskContext` inside a worker process."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        node: str,
        attempt: int,
        version: str,
        artifact_root: Path,
        log: Any,
        progress_interval_s: float,
        masker: Masker = NO_SECRETS,
        pipeline: str = "default",
        chunk: int | None = None,
    ) -> None:
        self.run_id = run_id
        self.node = node
        self.attempt = attempt
        self.log = log
        self.masker = masker  #: this attempt's secrets: what the runner masks in errors and artifacts
        self._store = store
        self._root, self._parts = artifact_root, (pipeline, node.partition("[")[0], version, run_id)
        self._chunk = chunk  #: a map chunk writes under its map's directory, in chunk-<i>/
        self._interval = progress_interval_s
        self._last_write = 0.0
        self.reported: int | None = None  #: the last ``done`` reported (a map counts a chunk's rows with it)
        #: also told of every progress write (workers/flower_state.py: a ``task-progress`` event for Flower)
        self.on_progress: Callable[[int, int], None] | None = None

    @property
    def output_dir(self) -> Path:
        path = task_dir(self._root, *self._parts)  # checked on each use: no symlink escapes the root
        if self._chunk is not None:
            path = path / f"chunk-{self._chunk:06d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, done: int, total: int) -> None:
        """Store ``done/total``; at most one write per interval, the final one always."""
        self.reported = int(done)
        now = time.monotonic()
        if done < total and now - self._last_write < self._interval:
            return
        self._last_write = now
        self._store.set_progress(self.run_id, self.node, int(done), int(total))
        if self.on_progress is not None:
            self.on_progress(int(done), int(total))
