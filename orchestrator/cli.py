"""The ``chordflow`` command: thin argument parsing, then the client, rendered with rich.

Every :class:`ChordflowError` is caught here, printed as one clear message,
and mapped to an exit code from :mod:`orchestrator.exitcodes`; no traceback.
Every string that comes from a user, a pipeline file, a task or Redis is printed
through :func:`safe`: rich markup in it is shown literally (never parsed, so it
cannot crash the CLI) and control characters are made visible.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.errors import (
    ChordflowError,
    EmbeddedStartError,
    ParamOverrideError,
    PipelineInvalid,
    RedisUnavailable,
    RunNotFound,
)
from orchestrator.exitcodes import RUN_STATE_EXIT, ExitCode
from orchestrator.limits import Limits
from orchestrator.settings import Settings

console = Console()
err_console = Console(stderr=True)
MAX_BARS = 40  #: above this many tasks, show one aggregate bar
STATE_STYLE = {
    "succeeded": "green",
    "cached": "cyan",
    "failed": "bold red",
    "upstream_failed": "red",
    "cancelled": "yellow",
    "running": "blue",
    "retrying": "magenta",
    "queued": "white",
    "pending": "dim",
}


#: C0/C1 controls (but newline and tab), DEL, and bidi overrides: a terminal would act on them
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: object) -> str:
    """``text`` for rich: markup escaped (shown literally), control characters as ``\\xNN``/``\\uNNNN``."""
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", str(text))
    return escape(shown)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "env", None):
        os.environ["CHORDFLOW_ENV"] = args.env
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return int(args.func(args))
    except PipelineInvalid as exc:
        for problem in exc.problems:
            err_console.print(f"[red]error[/red]: {safe(problem)}", highlight=False, soft_wrap=True)
        return ExitCode.INVALID
    except RunNotFound as exc:
        err_console.print(f"[red]error[/red]: {safe(exc)}", highlight=False)
        return ExitCode.INVALID
    except (RedisUnavailable, EmbeddedStartError) as exc:
        err_console.print(f"[red]error[/red]: {safe(exc)}", highlight=False)
        return ExitCode.UNAVAILABLE
    except ValidationError as exc:  # settings from env/TOML
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            err_console.print(f"[red]configuration error[/red]: {safe(loc)}: {safe(err['msg'])}", highlight=False)
        return ExitCode.INVALID
    except ChordflowError as exc:
        err_console.print(f"[red]error[/red]: {safe(exc)}", highlight=False)
        return ExitCode.INVALID
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        return ExitCode.INTERRUPTED


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chordflow", description="Run pipelines of Python tasks on Celery workers.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="validate, submit and watch a pipeline run")
    run.add_argument("file", help="pipeline TOML file")
    run.add_argument("--param", action="append", default=[], metavar="TASK.FIELD=VALUE", help="override a param")
    run.add_argument("--env", choices=["dev", "staging", "prod"], help="configuration environment")
    run.add_argument("--dry-run", action="store_true", help="print the plan; dispatch nothing")
    run.add_argument("--detach", action="store_true", help="print the run id and return at once")
    run.add_argument("--timeout", type=float, default=None, help="stop waiting after this many seconds")
    run.add_argument("--no-progress", action="store_true", help="no live progress bars")
    run.add_argument("--notify-webhook", action="append", default=[], metavar="URL",
                     help="POST a signed JSON notice here when the run ends (repeatable; adds to [notify])")
    run.add_argument("--notify-email", action="append", default=[], metavar="ADDR",
                     help="e-mail this address when the run ends (repeatable; adds to [notify])")
    run.add_argument("--force", action="store_true", help="ignore the cache: run every task")
    run.add_argument("--force-task", action="append", default=[], metavar="NAME",
                     help="run this task and its descendants even if cached (repeatable)")
    run.add_argument("--resume-from", metavar="TASK", help="re-run TASK and its descendants, reuse every other result")
    run.add_argument("--from-run", metavar="RUN_ID", help="with --resume-from: the run whose results are reused")
    run.set_defaults(func=cmd_run)

    cache = sub.add_parser("cache", help="the result cache: list or clear entries")
    cache.add_argument("action", choices=["ls", "clear"])
    cache.add_argument("--task", help="only this task (task or node name)")
    cache.add_argument("--env", choices=["dev", "staging", "prod"])
    cache.set_defaults(func=cmd_cache)

    gc = sub.add_parser("gc", help="delete artifact directories and run manifests older than N days")
    gc.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    gc.add_argument("--env", choices=["dev", "staging", "prod"])
    gc.set_defaults(func=cmd_gc)

    st = sub.add_parser("status", help="a run's state, per task")
    st.add_argument("run_id")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--env", choices=["dev", "staging", "prod"])
    st.set_defaults(func=cmd_status)

    runs = sub.add_parser("runs", help="recent runs")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--env", choices=["dev", "staging", "prod"])
    runs.set_defaults(func=cmd_runs)

    cancel = sub.add_parser("cancel", help="cancel a run (persistent flag; running attempts are terminated)")
    cancel.add_argument("run_id")
    cancel.add_argument("--env", choices=["dev", "staging", "prod"])
    cancel.set_defaults(func=cmd_cancel)

    retry = sub.add_parser("retry", help="re-run only the failed, upstream_failed and cancelled tasks of a run")
    retry.add_argument("run_id")
    retry.add_argument("--detach", action="store_true", help="return at once")
    retry.add_argument("--timeout", type=float, default=None)
    retry.add_argument("--no-progress", action="store_true")
    retry.add_argument("--env", choices=["dev", "staging", "prod"])
    retry.set_defaults(func=cmd_retry)

    val = sub.add_parser("validate", help="check pipeline files (for CI); touches no Redis")
    val.add_argument("files", nargs="+")
    val.set_defaults(func=cmd_validate)

    pub = sub.add_parser("publish", help="validate pipeline files and publish them (submit by name, no task code)")
    pub.add_argument("files", nargs="+")
    pub.add_argument("--env", choices=["dev", "staging", "prod"])
    pub.set_defaults(func=cmd_publish)

    srv = sub.add_parser("serve", help="the HTTP API (FastAPI + uvicorn; OpenAPI at /docs)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--env", choices=["dev", "staging", "prod"])
    srv.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="start a Celery worker with chordflow's app")
    w.add_argument("--queues", "-Q", help="comma-separated queues (default: settings.queues)")
    w.add_argument("--concurrency", "-c", type=int, help="worker processes (default: settings.concurrency)")
    w.add_argument("--hostname", "-n", help="worker node name, e.g. w1@%%h")
    w.add_argument("--loglevel", "-l", default="INFO")
    w.add_argument("--env", choices=["dev", "staging", "prod"])
    w.set_defaults(func=cmd_worker)
    return p


# -- validate ---------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from orchestrator.loader import load_pipeline
    from orchestrator.validate import validate

    settings = Settings()
    limits = Limits.from_settings(settings)
    failed = False
    for file in args.files:
        try:
            pipeline = load_pipeline(file, tuple(settings.allowed_task_prefixes), limits)
            problems = validate(pipeline, limits)
        except PipelineInvalid as exc:
            problems = exc.problems
        if problems:
            failed = True
            for problem in problems:
                err_console.print(f"[red]error[/red]: {safe(problem)}", highlight=False, soft_wrap=True)
        else:
            console.print(f"{safe(file)}: ok ({len(pipeline.nodes)} tasks)", highlight=False)
    return ExitCode.INVALID if failed else ExitCode.OK


# -- run --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.client import parse_param_overrides
    from orchestrator.loader import load_pipeline
    from orchestrator.notify import effective
    from orchestrator.plan import build_plan

    settings = Settings()
    limits = Limits.from_settings(settings)
    pipeline = load_pipeline(args.file, tuple(settings.allowed_task_prefixes), limits)
    try:
        overrides = parse_param_overrides(args.param, pipeline)
    except RecursionError:
        raise ParamOverrideError(f"--param: a value is nested too deeply (limit {limits.max_param_depth})") from None
    if overrides:
        pipeline = pipeline.with_params(overrides)
    plan = build_plan(pipeline, settings.default_queue, settings.max_chain, limits)  # validates; no Redis yet
    notify = {"webhooks": args.notify_webhook, "emails": args.notify_email}
    effective(pipeline.notify, notify)  # validates the per-run targets before anything is written
    options = _cache_options(args)
    if args.from_run and not args.resume_from:
        raise ChordflowError("--from-run needs --resume-from TASK")
    if args.dry_run:
        _print_plan(plan)
        _print_decisions(pipeline, plan, settings, options)
        return ExitCode.OK
    if args.detach and settings.embedded:
        raise ChordflowError("--detach needs a shared Redis (CHORDFLOW_REDIS_URL): the embedded one stops on exit")

    with _backend(settings) as (client, stack):
        for warning in client.check_redis():
            err_console.print(f"[yellow]warning[/yellow]: {safe(warning)}", highlight=False)
        if stack is None:  # embedded workers are starting with this command; their tasks are ours
            for problem in client.unroutable(plan):
                err_console.print(f"[yellow]warning[/yellow]: {safe(problem)}", highlight=False, soft_wrap=True)
        run_id = client.submit(pipeline, notify=notify, **options)
        if args.detach:
            console.print(safe(run_id))
            return ExitCode.OK
        console.print(f"run [bold]{safe(run_id)}[/bold] of pipeline '{safe(plan.pipeline)}' ({len(plan.order)} tasks)")
        snap = _watch(client, run_id, plan.order, args, stack)
        _write_manifest(client, snap)
        if stack is not None and snap.finished and client.notifications_pending(run_id, wait_s=30):
            err_console.print("[yellow]warning[/yellow]: notifications still undelivered; embedded workers stop now")
        _print_summary(snap, settings, plan)
        _print_sink_results(client, snap, plan)
        if not snap.finished:
            err_console.print(f"[yellow]stopped waiting after {args.timeout}s; run {safe(run_id)} goes on[/yellow]")
            return ExitCode.TIMEOUT
        return RUN_STATE_EXIT.get(snap.state, ExitCode.RUN_FAILED)


@contextlib.contextmanager
def _backend(settings: Settings) -> Iterator[tuple[Any, Any]]:
    """The client, against the configured Redis or an embedded stack started for this command."""
    from orchestrator.client import Client

    if not settings.embedded:
        yield Client(settings), None
        return
    from orchestrator.embedded import EmbeddedStack

    console.print("[dim]no CHORDFLOW_REDIS_URL: starting a private Redis and local workers[/dim]")
    with EmbeddedStack(settings) as stack:
        yield Client(settings.model_copy(update={"redis_url": _secret(stack.url)})), stack


def _secret(url: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(url)


class _StallHints:
    """While a run waits, say once per reason why queued work is not being taken (no silent wait)."""

    def __init__(self, client: Any, embedded: bool, printer: Any) -> None:
        self.client = client
        self.after_s = 15.0 if embedded else 3.0  # embedded workers need a moment to start
        self.printer = printer
        self.said: set[str] = set()
        self.next_check = 0.0

    def __call__(self, snap: Any) -> None:
        if time.monotonic() < self.next_check or snap.finished:
            return
        self.next_check = time.monotonic() + 2.0
        if not snap.states:  # a large run is watched by its counters only: look at its nodes now
            snap = self.client.status(snap.run_id)
        for hint in self.client.stalled(snap, self.after_s):
            reason = hint.split(": ", 1)[-1]
            if reason not in self.said:
                self.said.add(reason)
                self.printer(f"[yellow]waiting[/yellow]: {hint}")


def _watch(client: Any, run_id: str, order: list[str], args: argparse.Namespace, stack: Any) -> Any:
    detail = len(order) <= MAX_BARS
    if args.no_progress or not console.is_terminal and not os.environ.get("CHORDFLOW_FORCE_PROGRESS"):
        hints = _StallHints(client, stack is not None, lambda m: err_console.print(m, highlight=False, soft_wrap=True))

        def plain_update(snap: Any) -> None:
            if stack is not None:
                stack.check()
            hints(snap)

        return client.wait(run_id, timeout_s=args.timeout, on_update=plain_update, detail=detail)

    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(bar_width=30),
        TextColumn("{task.completed:>6.0f}/{task.total:<6.0f}"),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    bars: dict[str, Any] = {}
    hints = _StallHints(client, stack is not None, lambda m: progress.console.print(m, highlight=False))
    with progress:
        if detail:
            for name in order:
                bars[name] = progress.add_task(safe(name), total=1, state="[dim]pending[/dim]")
        else:
            bars["*"] = progress.add_task(f"{len(order)} tasks", total=len(order), state="")

        def update(snap: Any) -> None:
            if stack is not None:
                stack.check()
            hints(snap)
            if not detail:
                counts = snap.counts()
                done = sum(counts.values())
                text = " ".join(f"[{STATE_STYLE.get(k, '')}]{safe(k)}={v}[/]" for k, v in sorted(counts.items()))
                progress.update(bars["*"], completed=done, state=text)
                return
            for name, bar in bars.items():
                state = snap.states.get(name, "pending")
                style = STATE_STYLE.get(state, "")
                if name in snap.maps:  # a map: one bar of its chunks (done of total), rows and an ETA
                    m = snap.maps[name]
                    progress.update(bar, completed=m["succeeded"] + m["failed"], total=max(m["total"], 1),
                                    state=f"[{style}]{safe(state)}[/] {_map_text(snap, name, m)}")  # fmt: skip
                    continue
                done, total = _progress_of(snap.progress.get(name), state)
                progress.update(bar, completed=done, total=total, state=f"[{style}]{safe(state)}[/]")

        return client.wait(run_id, timeout_s=args.timeout, on_update=update, detail=True)


def _map_text(snap: Any, name: str, m: dict[str, int]) -> str:
    """``chunks 120/2000 · 4 running · 2 failed · 1,234,000 items · ETA 0:42`` (ETA from the map's own pace)."""
    done = m["succeeded"] + m["failed"]
    parts = [f"chunks {done}/{m['total']}", f"{m['running']} running"]
    if m["failed"]:
        parts.append(f"[red]{m['failed']} failed[/red]")
    parts.append(f"{m['items']:,} items")
    started = snap.times.get(f"{name}:started")
    if started and 0 < done < m["total"] and snap.states.get(name) == "running":
        left = (snap.now - float(started)) / done * (m["total"] - done)
        parts.append(f"ETA {int(left // 60)}:{int(left % 60):02d}")
    return " · ".join(parts)


def _progress_of(raw: str | None, state: str) -> tuple[float, float]:
    if state in ("succeeded", "cached"):
        if raw:
            _, _, total = raw.partition("/")
            return float(total or 1), float(total or 1)
        return 1.0, 1.0
    if raw:
        done, _, total = raw.partition("/")
        return float(done), max(float(total or 1), 1.0)
    return 0.0, 1.0


def _print_plan(plan: Any) -> None:
    console.print(
        f"[bold]Plan[/bold] for pipeline '{safe(plan.pipeline)}': "
        f"{len(plan.order)} tasks in {len(plan.segments)} segments"
    )
    console.print("order: " + safe(" -> ".join(plan.order)), highlight=False, soft_wrap=True)
    table = Table(show_lines=False)
    for col in ("seg", "tasks", "released", "queue", "Celery canvas"):
        table.add_column(col, overflow="fold")
    for row in plan.describe():
        table.add_row(
            str(row["segment"]),
            safe(" -> ".join(row["tasks"])),
            safe(row["release"]),
            safe(row["queue"]),
            safe(row["canvas"]),
        )
    console.print(table)
    for parent, heads in plan.fan_outs().items():
        console.print(f"group: {safe(parent)} releases {safe(', '.join(heads))} together", highlight=False)


def _write_manifest(client: Any, snap: Any) -> None:
    """The run-level manifest (orchestrator/manifest.py), once the run has ended; never fails the command."""
    if not snap.finished:
        return
    from orchestrator import manifest

    try:
        manifest.write(client.store.r, snap, client.settings.artifact_root)
    except Exception as exc:  # a full disk or an unsafe path must not hide the run's outcome
        err_console.print(f"[yellow]warning[/yellow]: manifest not written: {safe(exc)}", highlight=False)


def _cache_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"force": args.force, "force_tasks": args.force_task, "resume_from": args.resume_from,
            "from_run": args.from_run}  # fmt: skip


def _print_decisions(pipeline: Any, plan: Any, settings: Settings, options: dict[str, Any]) -> None:
    """Per node: ``run`` and why (diffed against the last recorded fingerprint), or ``cached`` and from where."""
    try:
        cplan = _client().cache_plan(pipeline, plan, **options)
    except (RedisUnavailable, EmbeddedStartError) as exc:
        console.print(f"decisions: cache not consulted ({safe(exc)}); nothing was dispatched", highlight=False)
        return
    table = Table(show_lines=False)
    for col in ("task", "decision", "why"):
        table.add_column(col, overflow="fold")
    for name in plan.order:
        d, fp = cplan.decisions[name], cplan.fps[name].digest
        if d.action == "cached":
            table.add_row(safe(name), f"[cyan]cached[/] (from run {safe(d.source_run)}, fingerprint {fp[:12]}…)",
                          "fingerprint unchanged")  # fmt: skip
        else:
            table.add_row(safe(name), f"run (fingerprint {fp[:12]}…)", safe("; ".join(d.reasons)))
    console.print(table)
    n_cached = sum(d.action == "cached" for d in cplan.decisions.values())
    console.print(
        f"decisions: {len(plan.order) - n_cached} would run, {n_cached} cached, 0 blocked; nothing was dispatched",
        highlight=False,
    )


# -- status / runs / cancel -----------------------------------------------------------------------


def _client(workers: bool = False) -> Any:
    """A client of the configured Redis; with no URL, of the embedded one (its persistent state directory),
    started on demand and left to its last user at exit (``workers``: local workers too, e.g. retry)."""
    from orchestrator.client import Client

    settings = Settings()
    if settings.embedded:
        from orchestrator.embedded import EmbeddedStack

        stack = EmbeddedStack(settings, workers=workers).__enter__()
        atexit.register(stack.close)
        return Client(settings.model_copy(update={"redis_url": _secret(stack.url)}))
    return Client(settings)


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.notify import public_view

    client = _client()
    snap = client.status(args.run_id)
    if args.json:
        console.print_json(
            json.dumps(
                {
                    "run_id": snap.run_id,
                    "state": snap.state,
                    "meta": {**snap.meta, **({"notify": public_view(snap.meta["notify"])} if "notify" in snap.meta
                                             else {})},  # fmt: skip
                    "notifications": client.notifications(args.run_id),
                    "maps": {n: {**m, "failed_chunks": _masked(client.store.failed_chunks(snap.run_id, n))}
                             for n, m in snap.maps.items()},  # fmt: skip
                    "tasks": {
                        n: {
                            "state": s,
                            "attempts": int(snap.attempts.get(n, 0)),
                            "host": snap.hosts.get(n),
                            "progress": snap.progress.get(n),
                            "duration_s": _duration(snap, n),
                            "error": _error(snap, n),
                        }
                        for n, s in snap.states.items()
                    },
                }
            )
        )
    else:
        _print_summary(snap, client.settings, None)
    return ExitCode.OK


def cmd_runs(args: argparse.Namespace) -> int:
    client = _client()
    table = Table(title="recent runs")
    for col in ("run_id", "pipeline", "state", "tasks", "created (UTC)", "duration"):
        table.add_column(col)
    for snap in client.runs(args.limit):
        m = snap.meta
        table.add_row(
            safe(snap.run_id),
            safe(m.get("pipeline", "")),
            f"[{STATE_STYLE.get(snap.state, '')}]{safe(snap.state)}[/]",
            safe(m.get("total", "")),
            _ts(m.get("created_at")),
            _span(m.get("created_at"), m.get("finished_at"), snap.now),
        )
    console.print(table)
    return ExitCode.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    state = _client().cancel(args.run_id)
    console.print(f"run {safe(args.run_id)}: {safe(state)}")
    return ExitCode.OK


def cmd_retry(args: argparse.Namespace) -> int:
    client = _client(workers=True)
    count = client.retry(args.run_id)
    if count == 0:
        console.print(f"run {safe(args.run_id)}: nothing to retry")
        return ExitCode.OK
    console.print(f"run {safe(args.run_id)}: re-running {count} tasks")
    if args.detach:
        return ExitCode.OK
    order = sorted(client.status(args.run_id).states)
    snap = _watch(client, args.run_id, order, args, None)
    _write_manifest(client, snap)
    _print_summary(snap, client.settings, None)
    if not snap.finished:
        return ExitCode.TIMEOUT
    return RUN_STATE_EXIT.get(snap.state, ExitCode.RUN_FAILED)


def cmd_cache(args: argparse.Namespace) -> int:
    from orchestrator import cache

    client = _client()
    if args.action == "clear":
        n = cache.clear(client.store.r, args.task)
        console.print(f"cleared {n} cache entries" + (f" of {safe(args.task)}" if args.task else ""))
        return ExitCode.OK
    table = Table(title="cache entries")
    for col in ("pipeline", "task", "fingerprint", "from run", "created (UTC)", "expires in", "artifacts"):
        table.add_column(col, overflow="fold")
    for e in cache.scan(client.store.r, args.task):
        ttl = "never" if e["ttl_s"] < 0 else f"{e['ttl_s']} s"
        table.add_row(safe(e.get("pipeline")), safe(e.get("node")), safe(e["fp"][:12]) + "…", safe(e.get("run_id")),
                      _ts(str(e.get("created_at"))), ttl, safe(e.get("artifacts") or "-"))  # fmt: skip
    console.print(table)
    return ExitCode.OK


def cmd_gc(args: argparse.Namespace) -> int:
    from orchestrator.gc import collect

    settings = Settings()
    removed = collect(settings.artifact_root, args.older_than * 86400, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for path in removed:
        console.print(f"{verb} {safe(path)}", highlight=False)
    console.print(f"{verb} {len(removed)} directories older than {args.older_than:g} days under "
                  f"{safe(settings.artifact_root)}", highlight=False)  # fmt: skip
    return ExitCode.OK


def cmd_publish(args: argparse.Namespace) -> int:
    client = _client()
    failed = False
    for file in args.files:
        try:
            pub, changed = client.publish(file)
        except PipelineInvalid as exc:
            failed = True
            for problem in exc.problems:
                err_console.print(f"[red]error[/red]: {safe(problem)}", highlight=False, soft_wrap=True)
            continue
        what = "published" if changed else "unchanged"
        console.print(f"{safe(pub.name)}: {what} ({len(pub.plan.order)} tasks, {pub.hash[:12]})", highlight=False)
    return ExitCode.INVALID if failed else ExitCode.OK


def cmd_serve(args: argparse.Namespace) -> int:
    from orchestrator.api.serve import serve

    return serve(Settings(), args.host, args.port, console)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = Settings()
    if settings.embedded:
        raise ChordflowError("a worker needs CHORDFLOW_REDIS_URL (the shared Redis it takes work from)")
    settings.redis_url_value()  # refuses a password-less URL here, with a clear message, not in Celery's boot
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker",
        "-Q", args.queues or ",".join(settings.queues),
        "-c", str(args.concurrency or settings.concurrency),
        "-l", args.loglevel,
    ]  # fmt: skip
    if args.hostname:
        argv += ["-n", args.hostname]
    if settings.task_events:
        argv.append("-E")
    os.execv(sys.executable, argv)
    return ExitCode.OK  # not reached


# -- rendering --------------------------------------------------------------------------------------


def _print_summary(snap: Any, settings: Settings, plan: Any) -> None:
    order = plan.order if plan is not None else sorted(snap.states)
    table = Table(title=f"run {safe(snap.run_id)}: {safe(snap.state)}")
    for col in ("task", "state", "attempts", "duration", "host", "error"):
        table.add_column(col, overflow="fold")
    shown = order if len(order) <= 200 else [n for n in order if snap.states.get(n) not in ("succeeded", "cached")]
    for name in shown[:200]:
        state = snap.states.get(name, "pending")
        err = ""
        if name in snap.errors and state in ("failed", "retrying"):
            e = _error(snap, name) or {}
            err = f"{e.get('type')}: {str(e.get('message', ''))[:120]}"
        table.add_row(
            safe(name),
            f"[{STATE_STYLE.get(state, '')}]{safe(state)}[/]",
            f"{snap.maps[name]['total']} chunks" if name in snap.maps else safe(snap.attempts.get(name, "0")),
            _fmt_s(_duration(snap, name)),
            safe(snap.hosts.get(name, "")),
            safe(err),
        )
    console.print(table)
    for name, m in snap.maps.items():
        console.print(f"map {safe(name)}: {m['total']} chunks, {m['succeeded']} succeeded, {m['failed']} failed "
                      f"(allowed {m['allowed_failures']}), {m['items']:,} items", highlight=False)  # fmt: skip
    counts = safe(", ".join(f"{k}={v}" for k, v in sorted(snap.counts().items())))
    console.print(
        f"run {safe(snap.run_id)} [{STATE_STYLE.get(snap.state, '')}]{safe(snap.state)}[/] "
        f"in {_span(snap.meta.get('created_at'), snap.meta.get('finished_at'), snap.now)} ({counts})",
        highlight=False,
    )
    root = settings.artifact_root
    from orchestrator.artifacts import pipeline_part

    pipeline = safe(pipeline_part(snap.meta.get("pipeline", "")))
    console.print(f"outputs: {safe(root)}/{pipeline}/<task>/v<version>/{safe(snap.run_id)}/ "
                  f"(manifest: {safe(root)}/{pipeline}/runs/{safe(snap.run_id)}/manifest.json)", highlight=False)
    failed = [n for n in order if snap.states.get(n) == "failed" and n in snap.errors]
    for name in failed[:5]:  # the reason in full: the table cell is cut
        e = _error(snap, name)
        e = e if isinstance(e, dict) else {"type": "error", "message": str(e)}
        err_console.print(f"[red]{safe(name)}[/red]: {safe(e.get('type'))}: {safe(e.get('message', ''))}",
                          highlight=False, soft_wrap=True)  # fmt: skip
    if any(s == "failed" for s in snap.states.values()):
        console.print(
            f"error reports: {safe(root / 'errors' / snap.run_id)}/  (and {safe(root / 'failed_tasks.log')})",
            highlight=False,
        )


def _print_sink_results(client: Any, snap: Any, plan: Any) -> None:
    """Show what the final tasks returned (e.g. where the report went), if it is short."""
    sinks = [n for n in plan.order if not plan.nodes[n].children]
    if len(sinks) > 5:
        return
    results = client.results(snap.run_id)
    for name in sinks:
        if name in results:
            text = json.dumps(results[name])
            console.print(
                f"{safe(name)} -> {safe(text if len(text) <= 400 else text[:400] + '...')}",
                highlight=False,
                soft_wrap=True,
            )


def _masked(value: Any) -> Any:
    from orchestrator.redact import NO_SECRETS

    return NO_SECRETS.data(value, max_string=2000)


def _error(snap: Any, node: str) -> Any:
    """A node's stored error, through the masking path again (it was masked when written; a record
    written by an older worker or by hand must not print a URL password either)."""
    from orchestrator.redact import NO_SECRETS

    if node not in snap.errors:
        return None
    try:
        error = json.loads(snap.errors[node])
    except ValueError:
        error = snap.errors[node]
    return NO_SECRETS.data(error, max_string=2000)


def _duration(snap: Any, node: str) -> float | None:
    start, end = snap.times.get(f"{node}:started"), snap.times.get(f"{node}:finished")
    if start and end:
        return float(end) - float(start)
    if start:
        return max(0.0, snap.now - float(start))  # Redis time: this host's clock may be off
    return None


def _fmt_s(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}s"


def _ts(epoch: str | None) -> str:
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else ""


def _span(start: str | None, end: str | None, now: float) -> str:
    """From start to end, or to ``now`` (Redis time) while running; all three stamped by Redis."""
    if not start:
        return ""
    return _fmt_s(max(0.0, (float(end) if end else now) - float(start)))


if __name__ == "__main__":
    sys.exit(main())
