"""The dashboard: a page served by ``chordflow serve`` and the JSON it reads.

The page (``orchestrator/dashboard/``: HTML, one script, one stylesheet, nothing fetched from
elsewhere) draws what these endpoints return: a run's graph laid out once on the server
(:mod:`orchestrator.layout`, cached per run), one task's attempts, error report and log lines,
a pipeline's latency heatmap (tasks x its last runs), and the workers (chordflow's registry plus
Celery's own ``inspect``). Live states come from the run's event stream (``/runs/{id}/events``).
Everything is a read (open unless ``api_open_reads`` is off); cancel and retry are the API's own
mutations, with the token typed into the page. Secrets: params never leave the server here, and
errors, reports and log lines go through the same masking as the rest of the API.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from orchestrator import keys
from orchestrator.aio import AsyncClient
from orchestrator.api import auth
from orchestrator.api.models import TaskStatus, run_status
from orchestrator.artifacts import UnsafePath, error_report_path
from orchestrator.errors import RunNotFound
from orchestrator.layout import layout
from orchestrator.redact import NO_SECRETS
from orchestrator.store import RunSnapshot, check_run_id

STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
GRAPH_CACHE = 128  #: runs whose layout is kept in memory
INSPECT_TIMEOUT_S = 1.0  #: how long Celery's inspect waits for workers to answer
WORKERS_TTL_S = 2.0  #: one inspect answer serves every page open in that window
ATTEMPTS_SCANNED = 5_000  #: newest attempt-log lines looked at for one task


def _client(request: Request) -> AsyncClient:
    return request.app.state.client


Client = Annotated[AsyncClient, Depends(_client)]


# -- response bodies -------------------------------------------------------------------------------


class GraphBox(BaseModel):
    """A task, or a group of same-prefix siblings of one layer (``members``), at column ``layer``, row ``row``."""

    id: str
    label: str
    layer: int
    row: int
    task: str = ""
    map: bool = False
    members: list[str] = Field(default_factory=list)


class RunGraph(BaseModel):
    run_id: str
    pipeline: str
    layers: int
    rows: int
    boxes: list[GraphBox]
    edges: list[tuple[str, str]] = Field(description="(box id, box id)")


class Attempt(BaseModel):
    attempt: int = 0
    outcome: str = ""
    duration_s: float | None = None
    host: str | None = None
    at: Any = None
    error: str | None = None
    message: str | None = None


class TaskDetail(BaseModel):
    run_id: str
    task: str
    task_name: str
    queue: str | None = None
    parents: list[str]
    status: TaskStatus
    attempts: list[Attempt] = Field(description="finished attempts, oldest first")
    celery_id: str | None = Field(None, description="Celery task id of the running attempt")
    flower_url: str | None = Field(None, description="this attempt in Flower (CHORDFLOW_FLOWER_URL)")
    error_report_url: str | None = None
    logs_url: str


class TaskLogs(BaseModel):
    run_id: str
    task: str
    lines: list[dict[str, Any]] = Field(description="newest first")
    kept: int = Field(description=f"lines kept for this task (at most {keys.TASK_LOG_LINES})")


class HeatCell(BaseModel):
    run_id: str
    state: str | None = Field(None, description="null: the task was not part of that run")
    duration_s: float | None = None
    ratio: float | None = Field(None, description="duration / this task's median over the runs shown")


class HeatRow(BaseModel):
    task: str
    median_s: float | None = None
    cells: list[HeatCell] = Field(description="one per run, in the order of ``runs``")


class HeatRun(BaseModel):
    run_id: str
    state: str
    created_at: float | None = None


class Heatmap(BaseModel):
    pipeline: str
    runs: list[HeatRun] = Field(description="newest first")
    rows: list[HeatRow]


class ActiveTask(BaseModel):
    celery_id: str
    name: str
    run_id: str | None = None
    node: str | None = None
    started: float | None = None
    flower_url: str | None = None


class WorkerView(BaseModel):
    name: str
    host: str = ""
    pid: int = 0
    alive: bool = Field(description="announced in chordflow's registry (Redis time) or answered Celery's ping")
    answered: bool = Field(description="answered Celery's inspect within the timeout")
    queues: list[str] = Field(default_factory=list)
    active: list[ActiveTask] = Field(default_factory=list)
    flower_url: str | None = None


class Workers(BaseModel):
    workers: list[WorkerView]
    flower_url: str | None = None
    inspected_at: float


# -- helpers ---------------------------------------------------------------------------------------


def static_file(name: str) -> str:
    """A dashboard file shipped inside the package (``orchestrator/dashboard/``)."""
    return resources.files("orchestrator").joinpath("dashboard", name).read_text(encoding="utf-8")


async def _record(c: AsyncClient, run_id: str, task: str) -> dict[str, Any]:
    check_run_id(run_id)
    await c.run_state(run_id)
    raw = await c.r.hget(keys.run_keys(run_id).nodes, task)
    if raw is None:
        raise HTTPException(404, f"run '{run_id}' has no task '{task}'")
    return json.loads(raw)


def _graph(run_id: str, pipeline: str, records: dict[str, str]) -> RunGraph:
    parents, tasks, maps = {}, {}, set()
    for name, raw in records.items():
        rec = json.loads(raw)
        parents[name] = list(rec.get("up") or [])
        tasks[name] = str(rec.get("task", ""))
        if rec.get("map"):
            maps.add(name)
    lay = layout(parents, tasks, maps)
    boxes = [GraphBox(id=b.id, label=b.label, layer=b.layer, row=b.row, task=b.task, map=b.map, members=b.members)
             for b in lay.boxes]  # fmt: skip
    return RunGraph(run_id=run_id, pipeline=pipeline, layers=lay.layers, rows=lay.rows, boxes=boxes, edges=lay.edges)


def _flower(base: str | None, path: str) -> str | None:
    return None if not base else base.rstrip("/") + path


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- routes ----------------------------------------------------------------------------------------


def router(flower_url: str | None) -> APIRouter:
    """The dashboard's routes: the page, and reads behind ``auth.read`` like the rest of the API."""
    api = APIRouter()
    Reader = Depends(auth.read)
    graphs: OrderedDict[str, RunGraph] = OrderedDict()
    workers_cache: dict[str, Any] = {}

    @api.get("/dashboard", include_in_schema=False)
    async def page() -> HTMLResponse:
        """The dashboard page: runs, a run's graph, the heatmap, the workers (hash routes, one script).

        The page and its files hold no data, so they are served without a token even when reads need
        one; the page then sends the token typed into it with every read."""
        return HTMLResponse(static_file("index.html"), headers={"Cache-Control": "no-cache"})

    @api.get("/dashboard/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"no dashboard file '{name[:100]}'")
        return Response(static_file(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @api.get("/runs/{run_id}/graph", tags=["dashboard"], dependencies=[Reader])
    async def graph(run_id: str, c: Client) -> RunGraph:
        """The run's DAG laid out for drawing: columns by longest path, siblings grouped in big runs."""
        check_run_id(run_id)
        if run_id in graphs:
            await c.run_state(run_id)  # 404 once its keys expired, cached or not
            graphs.move_to_end(run_id)
            return graphs[run_id]
        k = keys.run_keys(run_id)
        pipe = c.r.pipeline(transaction=False)
        pipe.hget(k.meta, "pipeline")
        pipe.hgetall(k.nodes)
        pipeline, records = await pipe.execute()
        if not records:
            raise RunNotFound(f"no run '{run_id}' (unknown id, or its keys expired)")
        out = await asyncio.to_thread(_graph, run_id, pipeline or "", records)
        graphs[run_id] = out
        while len(graphs) > GRAPH_CACHE:
            graphs.popitem(last=False)
        return out

    @api.get("/runs/{run_id}/tasks/{task}/detail", tags=["dashboard"], dependencies=[Reader])
    async def task_detail(run_id: str, task: str, c: Client, request: Request) -> TaskDetail:
        """One task of a run: state, progress, error (traceback tail), every finished attempt, links."""
        record = await _record(c, run_id, task)
        k = keys.run_keys(run_id)
        pipe = c.r.pipeline(transaction=False)
        pipe.time()
        for key in (k.state, k.attempts, k.hosts, k.progress, k.errors):
            pipe.hget(key, task)
        pipe.hmget(k.times, [f"{task}:{t}" for t in ("queued", "started", "finished")])
        pipe.lrange(k.attempt_log, -ATTEMPTS_SCANNED, -1)
        pipe.hget(k.task_ids, task)
        (sec, usec), state, attempts_n, host, progress, error, (queued, started, finished), lines, celery_id = (
            await pipe.execute()
        )
        times = {f"{task}:{n}": v for n, v in (("queued", queued), ("started", started), ("finished", finished)) if v}
        snap = RunSnapshot(  # this one task's slice of a snapshot: run_status formats it like /runs/{id} does
            run_id, {}, states={task: state or "pending"}, attempts={task: attempts_n or "0"}, times=times,
            hosts={task: host} if host else {}, progress={task: progress} if progress else {},
            errors={task: error} if error else {}, now=sec + usec / 1e6,
        )
        status = run_status(snap).tasks[task]
        attempts = []
        for raw in lines:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("task") == task:
                fields = {f: line[f] for f in Attempt.model_fields if line.get(f) is not None}
                try:
                    attempts.append(Attempt.model_validate(NO_SECRETS.data(fields, max_string=2000)))
                except ValueError:  # a line this version cannot read: left out rather than a 500
                    continue
        report = None
        if status.error is not None:
            report = str(request.url_for("error_report", run_id=run_id, task=task).path)
        return TaskDetail(
            run_id=run_id, task=task, task_name=str(record.get("task", "")), queue=record.get("q"),
            parents=list(record.get("up") or []), status=status, attempts=attempts, celery_id=celery_id,
            flower_url=_flower(flower_url, f"/task/{celery_id}") if celery_id else None, error_report_url=report,
            logs_url=str(request.url_for("task_logs", run_id=run_id, task=task).path),
        )  # fmt: skip

    @api.get("/runs/{run_id}/tasks/{task}/error-report", name="error_report", tags=["dashboard"], dependencies=[Reader])
    async def error_report(run_id: str, task: str, c: Client) -> dict[str, Any]:
        """The error report of the task's latest failed attempt (``errors/<run_id>/<task>-<attempt>.json``)."""
        await _record(c, run_id, task)
        attempts = int(await c.r.hget(keys.run_keys(run_id).attempts, task) or 0)
        root = Path(c.settings.artifact_root)
        for attempt in range(attempts, 0, -1):
            try:
                path = error_report_path(root, run_id, task, attempt)
                text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            except (UnsafePath, OSError):
                continue
            try:
                return NO_SECRETS.data(json.loads(text), max_string=20_000)
            except ValueError:
                break
        raise HTTPException(404, f"task '{task}' of run '{run_id}' has no error report on this server")

    @api.get("/runs/{run_id}/tasks/{task}/logs", name="task_logs", tags=["dashboard"], dependencies=[Reader])
    async def task_logs(
        run_id: str, task: str, c: Client, limit: Annotated[int, Query(ge=1, le=keys.TASK_LOG_LINES)] = 100
    ) -> TaskLogs:
        """The task's log lines, newest first (a map's chunks share their map's lines), masked."""
        await _record(c, run_id, task)
        key = keys.task_logs(run_id, task)
        pipe = c.r.pipeline(transaction=False)
        pipe.lrange(key, 0, limit - 1)
        pipe.llen(key)
        raw, kept = await pipe.execute()
        lines = []
        for item in raw:
            try:
                value = json.loads(item)
            except ValueError:
                value = {"event": item}
            lines.append(NO_SECRETS.data(value if isinstance(value, dict) else {"event": value}, max_string=4000))
        return TaskLogs(run_id=run_id, task=task, lines=lines, kept=int(kept))

    @api.get("/pipelines/{name}/heatmap", tags=["dashboard"], dependencies=[Reader])
    async def heatmap(name: str, c: Client, runs: Annotated[int, Query(ge=1, le=200)] = 30) -> Heatmap:
        """Each task's duration in the pipeline's last ``runs`` runs, relative to that task's median."""
        ids = await c.r.zrevrange(keys.pipeline_runs(name), 0, runs - 1)
        if not ids:
            await c.pipeline(name)  # 404 if it is not published either
            return Heatmap(pipeline=name, runs=[], rows=[])
        pipe = c.r.pipeline(transaction=False)
        for rid in ids:
            k = keys.run_keys(rid)
            pipe.hmget(k.meta, ["state", "created_at"])
            pipe.hgetall(k.state)
            pipe.hgetall(k.times)
        out = await pipe.execute()
        shown: list[HeatRun] = []
        per_run: list[tuple[dict[str, str], dict[str, str]]] = []
        order: dict[str, float] = {}
        for i, rid in enumerate(ids):
            (state, created), states, times = out[3 * i], out[3 * i + 1], out[3 * i + 2]
            if state is None and not states:
                continue  # expired
            shown.append(HeatRun(run_id=rid, state=state or "pending", created_at=float(created) if created else None))
            per_run.append((states, times))
            base = float(created) if created else 0.0
            for node in states:
                if not node.endswith("]"):
                    t = times.get(f"{node}:started")
                    order.setdefault(node, float(t) - base if t else float("inf"))
        tasks = sorted(order, key=lambda n: (order[n], n))
        rows = []
        for node in tasks:
            cells = []
            for run, (states, times) in zip(shown, per_run, strict=True):
                st = states.get(node)
                started, finished = times.get(f"{node}:started"), times.get(f"{node}:finished")
                dur = max(0.0, float(finished) - float(started)) if started and finished and st else None
                cells.append(HeatCell(run_id=run.run_id, state=st, duration_s=dur))
            med = _median([x.duration_s for x in cells if x.duration_s is not None and x.state == "succeeded"])
            for x in cells:
                if x.duration_s is not None and med:
                    x.ratio = round(x.duration_s / med, 3)
            rows.append(HeatRow(task=node, median_s=med, cells=cells))
        return Heatmap(pipeline=name, runs=shown, rows=rows)

    @api.get("/workers", tags=["dashboard"], dependencies=[Reader])
    async def workers(c: Client) -> Workers:
        """Workers: chordflow's registry (alive by Redis time) and Celery's inspect (queues, what runs)."""
        cached = workers_cache.get("answer")
        if cached is not None and time.monotonic() - workers_cache["at"] < WORKERS_TTL_S:
            return cached
        answer = await _workers(c, flower_url)
        workers_cache.update(answer=answer, at=time.monotonic())
        return answer

    return api


async def _workers(c: AsyncClient, flower_url: str | None) -> Workers:
    inspect = c.client.app.control.inspect(timeout=INSPECT_TIMEOUT_S)

    def ask(method: str) -> dict[str, Any]:
        try:
            return getattr(inspect, method)() or {}
        except Exception:  # a broker hiccup: show the registry alone
            return {}

    (live, silent), pings, queues, active = await asyncio.gather(
        asyncio.to_thread(c.client.fleet.split),
        asyncio.to_thread(ask, "ping"),
        asyncio.to_thread(ask, "active_queues"),
        asyncio.to_thread(ask, "active"),
    )
    views: dict[str, WorkerView] = {}
    for info, alive in [(w, True) for w in live] + [(w, False) for w in silent]:
        name = info.name or info.instance
        if name in views and views[name].alive:
            continue
        views[name] = WorkerView(name=name, host=info.host, pid=info.pid, alive=alive, answered=False,
                                 queues=list(info.queues))  # fmt: skip
    for name in set(pings) | set(queues) | set(active):
        view = views.setdefault(name, WorkerView(name=name, host=name.partition("@")[2], alive=True, answered=True))
        view.answered = view.alive = True
        if name in queues:
            view.queues = sorted({q.get("name", "") for q in queues[name] if isinstance(q, dict)} - {""})
        for t in active.get(name) or []:
            args = t.get("args") if isinstance(t, dict) else None
            ids = args if isinstance(args, list | tuple) and len(args) == 2 else (None, None)
            tid = str(t.get("id", ""))
            view.active.append(ActiveTask(
                celery_id=tid, name=str(t.get("name", "")), run_id=str(ids[0]) if ids[0] else None,
                node=str(ids[1]) if ids[1] else None, started=t.get("time_start"),
                flower_url=_flower(flower_url, f"/task/{tid}"),
            ))  # fmt: skip
    for view in views.values():
        view.flower_url = _flower(flower_url, f"/worker/{view.name}")
    ordered = sorted(views.values(), key=lambda v: (not v.alive, v.name))
    return Workers(workers=ordered, flower_url=flower_url, inspected_at=time.time())

