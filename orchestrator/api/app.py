"""The HTTP API (FastAPI): submit published pipelines by name, watch, cancel, retry.

Routes call :class:`~orchestrator.aio.AsyncClient`; every chordflow error maps to a 4xx
(invalid params 422 with task and field path, unknown pipeline or run 404, a run not
finished 409), Redis down to 503, and anything unexpected to a 500 without details
(logged here). Mutations need a bearer token (:mod:`orchestrator.api.auth`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse

from orchestrator import keys
from orchestrator.aio import AsyncClient
from orchestrator.api import auth, dashboard
from orchestrator.api.body_limit import BodyLimit
from orchestrator.api.metrics_route import add_metrics_route
from orchestrator.api.models import (
    Artifact,
    ArtifactList,
    CancelResponse,
    ErrorBody,
    PipelineInfo,
    ProblemOut,
    RetryResponse,
    RunsPage,
    RunStatus,
    SubmitRequest,
    SubmitResponse,
    run_status,
    run_summary,
)
from orchestrator.api.sse import STREAM_ID, run_events
from orchestrator.artifacts import SAFE_PART, UnsafePath, pipeline_of, safe_path, task_dir
from orchestrator.errors import (
    ChordflowError,
    PipelineInvalid,
    RedisUnavailable,
    RunNotFinished,
    RunNotFound,
    Unroutable,
)
from orchestrator.registry import PipelineNotFound
from orchestrator.settings import Settings
from orchestrator.states import RunState
from orchestrator.store import check_run_id

log = logging.getLogger("chordflow.api")
EXAMPLE_PAGE = Path(__file__).resolve().parents[2] / "examples" / "webapp" / "index.html"
THREADS = 32  #: for the sync client calls (submit, status): many SSE clients open at once
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 503)
}  # fmt: skip


def _client(request: Request) -> AsyncClient:
    return request.app.state.client


Client = Annotated[AsyncClient, Depends(_client)]


def create_app(settings: Settings, tokens: auth.Tokens, aclient: AsyncClient | None = None) -> FastAPI:
    """The ASGI app; ``aclient`` is made at startup when not given (it needs ``settings.redis_url``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(THREADS, thread_name_prefix="api"))
        app.state.client = aclient or AsyncClient(settings)
        yield
        await app.state.client.aclose()

    app = FastAPI(
        title="chordflow",
        summary="Submit published pipelines by name, follow their progress, cancel and retry them.",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.tokens = tokens
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    _handlers(app)
    add_metrics_route(app)

    Reader = Depends(auth.read)
    Writer = Depends(auth.mutation)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up (says nothing about Redis or workers: see ``/readyz``)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"model": ErrorBody}})
    async def readyz(c: Client) -> JSONResponse:
        """Redis answers and at least one live worker is registered."""
        await c.ping()
        live = await asyncio.to_thread(c.client.fleet.live)
        if not live:
            return JSONResponse({"detail": "Redis is reachable but no live worker is registered", "workers": 0}, 503)
        return JSONResponse({"status": "ready", "workers": len(live)})

    @app.get("/pipelines", tags=["pipelines"], dependencies=[Reader])
    async def pipelines(c: Client) -> list[PipelineInfo]:
        """Published pipelines with each task's params JSON Schema and defaults."""
        return [PipelineInfo.of(p) for p in await c.pipelines()]

    @app.get("/pipelines/{name}", tags=["pipelines"], dependencies=[Reader])
    async def pipeline(name: str, c: Client) -> PipelineInfo:
        return PipelineInfo.of(await c.pipeline(name))

    @app.post("/runs", status_code=201, tags=["runs"], dependencies=[Writer])
    async def submit(body: SubmitRequest, c: Client, request: Request) -> SubmitResponse:
        """Submit a published pipeline; params are ``{task: {field: value}}`` merged into its defaults."""
        run_id = await c.submit(body.pipeline, body.params, notify=body.notify)
        base = str(request.url_for("run", run_id=run_id).path)
        return SubmitResponse(run_id=run_id, pipeline=body.pipeline, status_url=base, events_url=base + "/events")

    @app.get("/runs", tags=["runs"], dependencies=[Reader])
    async def runs(
        c: Client,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
        pipeline: Annotated[str | None, Query(max_length=200)] = None,
        state: RunState | None = None,
    ) -> RunsPage:
        """Recent runs, newest first; filter by pipeline and state."""
        snaps = await c.runs(limit + 1, offset, pipeline, state.value if state else None)
        more = len(snaps) > limit
        failed = await c.failed_tasks([s.run_id for s in snaps[:limit] if int(s.meta.get("n_failed", 0) or 0)])
        page = [run_summary(s, failed.get(s.run_id)) for s in snaps[:limit]]
        return RunsPage(runs=page, next_offset=offset + limit if more else None)

    @app.get("/runs/{run_id}", name="run", tags=["runs"], dependencies=[Reader])
    async def run(run_id: str, c: Client) -> RunStatus:
        """A run's state, each task's state, times, attempts, host, progress and error (masked)."""
        status = run_status(await c.status(check_run_id(run_id)))
        status.notifications = await asyncio.to_thread(c.client.notifications, run_id)
        return status

    @app.get("/runs/{run_id}/results", tags=["runs"], dependencies=[Reader])
    async def results(run_id: str, c: Client) -> dict[str, Any]:
        """What each finished task returned (JSON), by task name."""
        return await c.results(check_run_id(run_id))

    @app.get("/runs/{run_id}/tasks/{task}/artifacts", tags=["artifacts"], dependencies=[Reader])
    async def artifacts(run_id: str, task: str, c: Client, request: Request) -> ArtifactList:
        """Files a task wrote for this run (under the artifact root)."""
        folder = await _task_folder(c, run_id, task)
        files = []
        if folder.is_dir():
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                if SAFE_PART.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    url = request.url_for("artifact", run_id=run_id, task=task, name=entry.name).path
                    files.append(Artifact(name=entry.name, size=entry.stat(follow_symlinks=False).st_size, url=url))
        return ArtifactList(run_id=run_id, task=task, files=files)

    @app.get("/runs/{run_id}/tasks/{task}/artifacts/{name}", name="artifact", tags=["artifacts"],
             dependencies=[Reader], response_class=FileResponse)  # fmt: skip
    async def artifact(run_id: str, task: str, name: str, c: Client) -> FileResponse:
        """One file a task wrote (never a symlink, never outside the artifact root)."""
        folder = await _task_folder(c, run_id, task)
        try:
            path = safe_path(folder, name)
            st = os.lstat(path)
        except (UnsafePath, OSError):
            raise HTTPException(404, f"task '{task}' of run '{run_id}' has no artifact '{name}'") from None
        if not stat.S_ISREG(st.st_mode):
            raise HTTPException(404, f"task '{task}' of run '{run_id}' has no artifact '{name}'")
        return FileResponse(path, filename=name)

    @app.post("/runs/{run_id}/cancel", tags=["runs"], dependencies=[Writer])
    async def cancel(run_id: str, c: Client) -> CancelResponse:
        """Cancel a run: nothing new starts, running attempts are terminated."""
        return CancelResponse(run_id=run_id, state=await c.cancel(check_run_id(run_id)))

    @app.post("/runs/{run_id}/retry", tags=["runs"], dependencies=[Writer])
    async def retry(run_id: str, c: Client) -> RetryResponse:
        """Re-run the failed, upstream_failed and cancelled tasks of a finished run (409 while it runs)."""
        return RetryResponse(run_id=run_id, retried=await c.retry(check_run_id(run_id)))

    @app.get("/runs/{run_id}/events", tags=["runs"], dependencies=[Reader],
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})  # fmt: skip
    async def events(
        run_id: str,
        c: Client,
        after: Annotated[str | None, Query(max_length=45, description="resume after this event id")] = None,
        last_event_id: Annotated[str | None, Header(max_length=45)] = None,
    ) -> StreamingResponse:
        """Server-sent events: a snapshot, then every state change and progress update, up to the run's end.

        Resume with the ``Last-Event-ID`` header (browsers send it on reconnect) or ``?after=``.
        """
        check_run_id(run_id)
        resume = last_event_id or after
        if resume is not None and not STREAM_ID.fullmatch(resume):
            raise HTTPException(400, f"'{resume[:45]}' is not an event id (expected <ms>-<seq>)")
        snapshot = await c.status(run_id) if resume is None else None
        if snapshot is None:
            await c.run_state(run_id)  # 404 now, not inside the stream
        stream = run_events(c, run_id, resume, snapshot, settings.sse_heartbeat_s)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    @app.get("/example", include_in_schema=False)
    async def example() -> HTMLResponse:
        """The example web app (``examples/webapp``): a button, a progress bar fed by SSE, the result."""
        try:
            return HTMLResponse(EXAMPLE_PAGE.read_text(encoding="utf-8"))
        except OSError:
            raise HTTPException(404, "the example web app is not installed (examples/webapp)") from None

    app.include_router(dashboard.router(settings.flower_url))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    return app


async def _task_folder(c: AsyncClient, run_id: str, task: str) -> Path:
    """``<artifact_root>/<pipeline>/<task>/v<version>/<run_id>`` of a task of this run (404 if it has no such task)."""
    import json

    check_run_id(run_id)
    await c.run_state(run_id)
    raw = await c.r.hget(keys.run_keys(run_id).nodes, task)
    if raw is None:
        raise HTTPException(404, f"run '{run_id}' has no task '{task}'")
    try:
        record = json.loads(raw)
        return task_dir(Path(c.settings.artifact_root), pipeline_of(record), task, str(record.get("ver", "1")), run_id)
    except UnsafePath:
        raise HTTPException(404, f"run '{run_id}' has no artifacts for task '{task}'") from None


def _error(status: int, detail: str, problems: list[ProblemOut] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(detail=detail, problems=problems or []).model_dump(), status_code=status)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(PipelineInvalid)
    async def invalid(_: Request, exc: PipelineInvalid) -> JSONResponse:
        problems = [ProblemOut.of(p) for p in exc.problems]
        return _error(422, "; ".join(str(p) for p in exc.problems[:10]), problems)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            ProblemOut(field=".".join(str(p) for p in err.get("loc", ()) if p != "body") or None,
                       message="unknown field" if err.get("type") == "extra_forbidden" else str(err.get("msg")))
            for err in exc.errors()[:50]
        ]  # fmt: skip
        return _error(422, "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems), problems)

    @app.exception_handler(ChordflowError)
    async def chordflow_error(_: Request, exc: ChordflowError) -> JSONResponse:
        if isinstance(exc, RunNotFound | PipelineNotFound):
            return _error(404, str(exc))
        if isinstance(exc, RunNotFinished | Unroutable):
            return _error(409, str(exc))
        if isinstance(exc, RedisUnavailable):
            log.warning("redis unavailable: %s", exc)
            return _error(503, "Redis is unavailable; try again later")
        return _error(400, str(exc))

    @app.exception_handler(redis.RedisError)
    async def redis_error(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis error: %s", exc)
        return _error(503, "Redis is unavailable; try again later")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error (logged on the server)")
