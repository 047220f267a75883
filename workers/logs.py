"""structlog JSON lines, tagged run_id / task / attempt / host by the runner.

One event per lifecycle transition: task.started, task.retrying,
task.succeeded, task.failed. With ``log_file`` set, lines also go to a
rotating file (10 MB x 5).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

_configured = False


def configure_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    """Route structlog through stdlib logging as JSON; idempotent."""
    global _configured
    if _configured:
        return
    _configured = True
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(log_file, maxBytes=10_000_000, backupCount=5))
    logger = logging.getLogger("chordflow")
    logger.setLevel(level.upper())
    logger.propagate = False
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(h)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


def get_logger(**bind: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("chordflow.task").bind(**bind)
