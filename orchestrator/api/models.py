"""The HTTP API's request and response bodies (typed: they are the OpenAPI schema at ``/docs``).

Every value shown comes from a run snapshot through :func:`run_status`, which masks
errors again (``NO_SECRETS``) and never includes params.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import Problem
from orchestrator.notify import NotifyConfig
from orchestrator.redact import NO_SECRETS
from orchestrator.registry import PublishedPipeline
from orchestrator.states import RunState, TaskState
from orchestrator.store import RunSnapshot


class SubmitRequest(BaseModel):
    """``{"pipeline": "etl", "params": {"ingest": {"rows": 1000}}}``."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(min_length=1, max_length=200, description="name of a published pipeline")
    params: dict[str, Any] = Field(default_factory=dict, description="{task: {field: value}}, merged into defaults")
    notify: NotifyConfig | None = Field(
        None, description="run-end notifications added to the pipeline's [notify]: webhooks (http/https), e-mails, on"
    )


class SubmitResponse(BaseModel):
    run_id: str
    pipeline: str
    status_url: str
    events_url: str


class ProblemOut(BaseModel):
    task: str | None = None
    field: str | None = None
    message: str

    @classmethod
    def of(cls, p: Problem) -> ProblemOut:
        return cls(task=p.task, field=p.field, message=p.message)


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a sentence, and for invalid params each problem with task and field path."""

    detail: str
    problems: list[ProblemOut] = Field(default_factory=list)


class Progress(BaseModel):
    done: int
    total: int


class TaskStatus(BaseModel):
    state: TaskState
    attempts: int = 0
    host: str | None = None
    progress: Progress | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    error: Any = None


class MapStatus(BaseModel):
    """A map node's chunks (C6): total, done, in flight, and the items (elements or reported rows) processed."""

    total: int
    succeeded: int
    failed: int
    running: int
    queued: int
    pending: int
    items: int
    allowed_failures: int


class RunStatus(BaseModel):
    run_id: str
    pipeline: str
    state: RunState
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    total: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    tasks: dict[str, TaskStatus] = Field(default_factory=dict)
    maps: dict[str, MapStatus] = Field(default_factory=dict, description="per map node: its chunks' counts")
    last_event: str = Field("0-0", description="stream id of the last event this status includes")
    notifications: list[dict[str, Any]] = Field(
        default_factory=list, description="run-end notification delivery attempts (target, outcome, attempt, at)"
    )


class RunSummary(BaseModel):
    run_id: str
    pipeline: str
    state: RunState
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = Field(None, description="started to finished (or to now while it runs)")
    total: int = 0
    done: int = Field(0, description="tasks settled (succeeded, cached, failed, upstream_failed, cancelled)")
    counts: dict[str, int] = Field(default_factory=dict, description="tasks per state")
    failed_tasks: list[str] = Field(default_factory=list, description="up to 5 failed tasks")


class RunsPage(BaseModel):
    runs: list[RunSummary]
    next_offset: int | None = Field(None, description="pass as ?offset= for the next page; null: no more")


class PipelineInfo(BaseModel):
    name: str
    description: str = ""
    tasks: list[str]
    params_schema: dict[str, dict[str, Any] | None] = Field(description="per task: JSON Schema of its params")
    defaults: dict[str, dict[str, Any]] = Field(description="per task: published params (secrets masked)")
    published_at: float
    hash: str

    @classmethod
    def of(cls, p: PublishedPipeline) -> PipelineInfo:
        return cls(name=p.name, description=p.description, tasks=list(p.plan.order), params_schema=p.schemas,
                   defaults=p.defaults(), published_at=p.published_at, hash=p.hash)  # fmt: skip


class CancelResponse(BaseModel):
    run_id: str
    state: str


class RetryResponse(BaseModel):
    run_id: str
    retried: int = Field(description="tasks set to run again (0: nothing failed)")


class Artifact(BaseModel):
    name: str
    size: int
    url: str


class ArtifactList(BaseModel):
    run_id: str
    task: str
    files: list[Artifact]


def _f(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _progress(raw: str | None) -> Progress | None:
    if not raw:
        return None
    done, _, total = raw.partition("/")
    try:
        return Progress(done=int(done), total=int(total))
    except ValueError:
        return None


def _error(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return NO_SECRETS.data(value, max_string=2000)


def run_status(snap: RunSnapshot) -> RunStatus:
    m = snap.meta
    tasks = {}
    for node, state in snap.states.items():
        started, finished = _f(snap.times.get(f"{node}:started")), _f(snap.times.get(f"{node}:finished"))
        tasks[node] = TaskStatus(
            state=state,
            attempts=int(snap.attempts.get(node, 0) or 0),
            host=snap.hosts.get(node),
            progress=_progress(snap.progress.get(node)),
            queued_at=_f(snap.times.get(f"{node}:queued")),
            started_at=started,
            finished_at=finished,
            duration_s=None if started is None else max(0.0, (finished or snap.now) - started),
            error=_error(snap.errors.get(node)),
        )
    return RunStatus(
        run_id=snap.run_id, pipeline=m.get("pipeline", ""), state=snap.state, created_at=_f(m.get("created_at")),
        started_at=_f(m.get("started_at")), finished_at=_f(m.get("finished_at")), total=int(m.get("total", 0) or 0),
        counts=snap.counts(), tasks=tasks, last_event=snap.last_event,
        maps={n: MapStatus(**c) for n, c in snap.maps.items()},
    )  # fmt: skip


SETTLED = ("succeeded", "cached", "failed", "upstream_failed", "cancelled")


def run_summary(snap: RunSnapshot, failed_tasks: list[str] | None = None) -> RunSummary:
    m = snap.meta
    started, finished = _f(m.get("started_at")), _f(m.get("finished_at"))
    counts = snap.counts()
    return RunSummary(run_id=snap.run_id, pipeline=m.get("pipeline", ""), state=snap.state,
                      created_at=_f(m.get("created_at")), started_at=started, finished_at=finished,
                      duration_s=None if started is None else max(0.0, (finished or snap.now) - started),
                      total=int(m.get("total", 0) or 0), done=sum(counts.get(s, 0) for s in SETTLED),
                      counts=counts, failed_tasks=failed_tasks or [])  # fmt: skip
