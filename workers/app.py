"""The Celery app: JSON only, acks late, one Celery task per chordflow task.

``celery -A workers.app worker`` (or ``chordflow worker``) loads :data:`app`,
which imports the configured task modules and registers each ``@task`` under
its own name, so Flower shows ``tasks.etl.steps.clean``, not a generic runner.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from celery import Celery

from orchestrator.artifacts import restrict_umask
from orchestrator.errors import ChordflowError
from orchestrator.settings import Settings
from orchestrator.spec import TaskSpec, registered_tasks
from workers import kombu_fixes, log_sink
from workers.logs import configure_logging
from workers.runner import NodeRunner


def celery_conf(settings: Settings, url: str) -> dict[str, Any]:
    """Celery settings of chordflow's workers (also what ``make bench`` gives raw Celery, for a fair race)."""
    return dict(
        broker_url=url,
        result_backend=url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_default_queue=settings.default_queue,
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        worker_max_memory_per_child=settings.max_memory_per_child_kb,
        worker_send_task_events=settings.task_events,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        result_expires=3600,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )


def create_app(settings: Settings, register: bool = False) -> Celery:
    """A configured Celery app; with ``register`` it also imports and registers the tasks."""
    url = settings.redis_url_value() if settings.redis_url is not None else "redis://127.0.0.1:6379/0"
    app = Celery("chordflow", set_as_current=False)
    app.conf.update(celery_conf(settings, url))
    if register:
        restrict_umask(settings.artifact_umask)  # before any file is created: artifacts are private
        kombu_fixes.apply()
        configure_logging(settings.log_level, settings.log_file)
        log_sink.configure(url if settings.redis_url is not None else None, settings.run_ttl_s)
        import_task_modules(settings.task_modules)
        for spec in registered_tasks().values():
            register_task(app, spec, settings)
        _check_redis_at_start(settings)
        _start_reaper_with_worker(settings)
        _report_unknown_tasks(settings)
    return app


def _check_redis_at_start(settings: Settings) -> None:
    """A worker refuses to start on a Redis with an eviction policy, and warns without persistence."""
    import redis as redis_lib

    from orchestrator.store import check_redis_config, connect
    from workers.logs import get_logger

    log = get_logger(component="worker")
    try:
        errors, warnings = check_redis_config(connect(settings.redis_url_value()))
    except redis_lib.RedisError as exc:  # Redis not up yet: Celery's own connection retry takes over
        log.warning("redis.unchecked", error=str(exc))
        return
    for w in warnings:
        log.warning("redis.config", problem=w)
    if errors:
        raise ChordflowError("; ".join(errors))


def _start_reaper_with_worker(settings: Settings) -> None:
    """Run the reaper, the liveness announcer, the due-time scheduler and the notifier in the worker's
    main process while it consumes; flush artifacts at exit."""
    from celery import signals

    from workers.artifact_writer import WRITER

    @signals.worker_process_shutdown.connect(weak=False)
    def _flush_artifacts(**_: Any) -> None:
        WRITER.flush()
        import os

        from orchestrator.metrics import LEDGER_LATENCY
        from workers.runner import _STORES

        store = _STORES.get(os.getpid())
        if store is not None:
            LEDGER_LATENCY.flush(store.r)  # this process's last ledger timings
        from workers.log_sink import flush_this_process

        flush_this_process()  # its last task log lines (task.succeeded / task.failed with the traceback)

    from workers.liveness import Announcer
    from workers.notifier import Notifier
    from workers.publisher import Publisher
    from workers.reaper import Reaper
    from workers.scheduler import DueScheduler

    threads: list[Any] = [Reaper(settings), DueScheduler(settings), Publisher(settings)]
    if settings.notify_sender:
        threads.append(Notifier(settings))
    if settings.alerts.enabled and settings.notify_sender:  # a checker whose alerts nobody here sends would
        from workers.alerting import AlertChecker  # make the ledger queue alerts for no one

        threads.append(AlertChecker(settings))

    @signals.worker_ready.connect(weak=False)
    def _start(sender: Any = None, **_: Any) -> None:
        queues = [q.name for q in sender.task_consumer.queues] if sender is not None else list(settings.queues)
        name = getattr(sender, "hostname", None) or "unknown"
        announcer = Announcer(settings, name, queues, sorted(registered_tasks()))
        threads.append(announcer)
        for t in threads:
            t.start()

    @signals.worker_shutdown.connect(weak=False)
    def _stop(**_: Any) -> None:
        for t in threads:
            t.stop()


def _report_unknown_tasks(settings: Settings) -> None:
    """A chordflow message for a task this worker does not know fails its node with the reason.

    Celery itself logs "Received unregistered task" and drops the message, which left the run
    waiting forever; here the ledger hears which task, which worker and its task modules.
    """
    from celery import signals

    @signals.task_unknown.connect(weak=False)
    def _unknown(sender: Any = None, message: Any = None, name: str = "", id: str = "", **_: Any) -> None:  # noqa: A002
        from workers.unknown import fail_unknown_node

        fail_unknown_node(settings, getattr(sender, "hostname", "") or "", message, name)


def import_task_modules(names: list[str]) -> None:
    """Import each module and, for packages, every submodule (so every ``@task`` registers)."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ChordflowError(f"task module '{name}' cannot be imported: {exc}") from exc
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=name + "."):
            importlib.import_module(info.name)


def register_task(app: Celery, spec: TaskSpec, settings: Settings) -> Any:
    """Register ``spec`` with Celery under its own name; the body is a :class:`NodeRunner`."""
    if spec.name in app.tasks:
        return app.tasks[spec.name]
    runner = NodeRunner(spec, settings)

    def run_node(self: Any, run_id: str, node: str) -> Any:
        return runner(self, run_id, node)

    run_node.__name__ = spec.fn.__name__
    run_node.__doc__ = spec.fn.__doc__
    return app.task(
        Request="workers.request:LedgerRequest",
        chordflow_runner=runner,
        name=spec.name,
        bind=True,
        typing=False,
        ignore_result=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,
        soft_time_limit=spec.timeout.soft_s,
        time_limit=spec.timeout.hard_limit_s,
    )(run_node)


def __getattr__(name: str) -> Any:
    """``celery -A workers.app`` asks for ``app``: build it from the environment on first use."""
    if name == "app":
        globals()["app"] = built = create_app(Settings(), register=True)
        return built
    raise AttributeError(name)
