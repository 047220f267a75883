"""structlog JSON lines, tagged run_id / task / attempt / host by the runner.

One event per lifecycle transition: task.started (debug), task.retrying,
task.succeeded, task.failed; plus the workers' own (worker.silent,
worker.messages_given_back, task.unregistered, reaper.requeued). With ``log_file`` set, lines also go to a
rotating file (10 MB x 5). Events of a task (``run_id`` and ``task`` bound) are also kept in Redis per
(run, task) for the dashboard (:mod:`workers.log_sink`).

Every event goes through :func:`mask_secrets` before it is rendered, so what task code passes
(``ctx.log.info("x", key=config.api_key)``) is masked like the runner's own fields.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

from orchestrator.redact import NO_SECRETS, Masker
from workers.log_sink import keep_task_line

_configured = False
MASKER_KEY = "_chordflow_masker"  #: bound by the runner; read and dropped by :func:`mask_secrets`
MAX_FIELD_CHARS = 20_000  #: a log field (a traceback included) is cut here before it is scanned


def mask_secrets(_logger: object, _method: str, event_dict: dict[str, object]) -> dict[str, object]:
    """structlog processor: secret-looking keys, secret types, URL credentials and the attempt's
    known secret values masked in every field, the event name and a formatted traceback included."""
    masker = event_dict.pop(MASKER_KEY, None)
    if not isinstance(masker, Masker):
        masker = NO_SECRETS
    return masker.data(event_dict, max_string=MAX_FIELD_CHARS)


def with_masker(log: structlog.typing.FilteringBoundLogger, masker: Masker) -> structlog.typing.FilteringBoundLogger:
    """``log`` whose events are masked with this attempt's secrets too."""
    return log.bind(**{MASKER_KEY: masker})


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
            mask_secrets,  # after format_exc_info: tracebacks are masked too
            keep_task_line,  # after the masking: the dashboard's copy is masked the same
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


def get_logger(**bind: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("chordflow.task").bind(**bind)
