"""Workers publish the pipelines they can run, so a web process can submit them by name.

At start, each worker validates and publishes the files of the ``publish_pipelines``
setting (globs, relative to ``CHORDFLOW_PROJECT_DIR`` or the working directory) into
the registry (:mod:`orchestrator.registry`). It runs once, in a thread, and never
stops the worker: a file that does not validate is logged and skipped.
"""

from __future__ import annotations

import threading
from pathlib import Path

import redis

from orchestrator.errors import ChordflowError
from orchestrator.registry import Registry, pipeline_files, publish_file
from orchestrator.settings import Settings
from orchestrator.store import connect
from orchestrator.trust import project_dir
from workers.logs import get_logger
from workers.threads import leave_signals_to_main_thread


class Publisher(threading.Thread):
    """Publishes once; ``stop`` is there so the worker can treat it like its other threads."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chordflow-publisher", daemon=True)
        self.settings = settings
        self.log = get_logger(component="publisher")

    def run(self) -> None:
        leave_signals_to_main_thread()
        files = pipeline_files(self.settings.publish_pipelines, project_dir() or Path.cwd())
        if not files:
            return
        try:
            registry = Registry(connect(self.settings.redis_url_value()))
            for path in files:
                try:
                    pub, changed = publish_file(registry, path, self.settings)
                    self.log.info("pipeline.published", pipeline=pub.name, file=str(path), changed=changed)
                except ChordflowError as exc:
                    self.log.warning("pipeline.not_published", file=str(path), error=str(exc))
        except (redis.RedisError, ChordflowError) as exc:
            self.log.warning("pipeline.publish_failed", error=str(exc))

    def stop(self) -> None:
        pass
