"""Pipelines declared in TOML, naming tasks by import path.

A file looks like::

    [pipeline]
    name = "etl"

    [tasks.ingest]
    uses = "tasks.etl.steps.ingest"     # module.function, decorated with @task
    params = { rows = 5000 }

    [tasks.clean]
    uses = "tasks.etl.steps.clean"
    depends_on = ["ingest"]

    [tasks.parse]                       # a map node: once per element of what `split` returns
    uses = "tasks.csvstats.parse_chunk"
    map = { over = "split", max_in_flight = 64, batch_size = 1, allow_failed = 0 }

    [notify]                            # optional: see orchestrator.notify
    webhooks = ["https://example.com/hooks/chordflow"]
    emails = ["data-team@example.com"]
    on = ["failed", "cancelled"]        # default: every end

``uses`` is imported only if it lies inside one of the allowed packages
(``tasks.`` by default), matched on whole module-path components (``tasks``
admits ``tasks.x`` but never ``tasks_evil``), so a pipeline file cannot make
chordflow import arbitrary modules. Every problem is reported with the file and
task name.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import PipelineInvalid, Problem
from orchestrator.limits import Limits, check_node_count
from orchestrator.model import DEFAULT_MAX_IN_FLIGHT, MapSpec, Node, Pipeline
from orchestrator.notify import NotifyConfig
from orchestrator.spec import spec_of


class _MapDecl(BaseModel):
    """``map = { over = "split", max_in_flight = 64, batch_size = 1, allow_failed = 0 }``"""

    model_config = ConfigDict(extra="forbid")

    over: str = Field(min_length=1)
    max_in_flight: int = Field(DEFAULT_MAX_IN_FLIGHT, ge=1, le=10_000)
    batch_size: int = Field(1, ge=1, le=1_000_000)
    allow_failed: int | float = Field(0, ge=0)


class _NodeDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uses: str = Field(min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    map: _MapDecl | None = None


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""


class _PipelineFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: _Header
    tasks: dict[str, _NodeDecl]
    notify: NotifyConfig | None = None


def load_pipeline(
    path: str | Path, allowed_prefixes: tuple[str, ...] = ("tasks.",), limits: Limits | None = None
) -> Pipeline:
    """Read ``path`` into a :class:`Pipeline` (not yet validated as a graph).

    Raises:
        PipelineInvalid: the file is unreadable, malformed, or names a task that
            cannot be imported; every problem is listed.
    """
    src = str(path)
    if Path(path).suffix.lower() != ".toml":
        raise PipelineInvalid([Problem(f"unsupported pipeline file type '{Path(path).suffix}' (use .toml)", file=src)])
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineInvalid([Problem("file not found", file=src)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineInvalid([Problem(f"cannot read file: {exc}", file=src)]) from None
    except tomllib.TOMLDecodeError as exc:
        raise PipelineInvalid([Problem(f"invalid TOML: {exc}", file=src)]) from None
    except RecursionError:
        raise PipelineInvalid([Problem("invalid TOML: nested too deeply", file=src)]) from None
    tasks = raw.get("tasks")
    if isinstance(tasks, dict):  # before the per-node work: a huge file is refused cheaply
        problems = check_node_count(len(tasks), limits or Limits(), src)
        if problems:
            raise PipelineInvalid(problems)
    try:
        decl = _PipelineFile.model_validate(raw)
    except ValidationError as exc:
        raise PipelineInvalid([_schema_problem(err, src) for err in exc.errors()]) from None

    pipeline = Pipeline(decl.pipeline.name, source=src, notify=decl.notify)
    problems: list[Problem] = []
    for node_name, node in decl.tasks.items():
        spec, problem = _resolve(node.uses, allowed_prefixes)
        if problem:
            problems.append(Problem(problem, task=node_name, file=src, field="uses"))
            continue
        assert spec is not None
        mapped = None
        deps = list(node.depends_on)
        if node.map is not None:
            m = node.map
            mapped = MapSpec(m.over, m.max_in_flight, m.batch_size, m.allow_failed)
            deps = list(dict.fromkeys([m.over, *deps]))  # a map depends on what it maps over
        pipeline.nodes.append(Node(node_name, spec, tuple(deps), node.params, mapped))
    if problems:
        raise PipelineInvalid(problems)
    return pipeline


def _schema_problem(err: Any, src: str) -> Problem:
    loc = [str(p) for p in err["loc"]]
    task = None
    if len(loc) >= 2 and loc[0] == "tasks":
        task, loc = loc[1], loc[2:]
    msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
    return Problem(msg, task=task, file=src, field=".".join(loc) or None)


def within_prefix(path: str, prefix: str) -> bool:
    """Whether dotted ``path`` is the package ``prefix`` or inside it (``tasks`` and ``tasks.`` alike)."""
    base = prefix.strip().rstrip(".")
    return bool(base) and (path == base or path.startswith(base + "."))


def _resolve(path: str, allowed_prefixes: tuple[str, ...]) -> tuple[Any, str | None]:
    """Import ``module.attr`` if allowed; returns (spec, problem)."""
    if not any(within_prefix(path, p) for p in allowed_prefixes):
        return None, f"'{path}' is outside the allowed task packages {list(allowed_prefixes)}"
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        return None, f"'{path}' is not a dotted path module.function"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        return None, f"cannot import module '{module_name}' ({exc.msg})"
    except Exception as exc:  # the module itself raised at import
        return None, f"importing '{module_name}' failed: {type(exc).__name__}: {exc}"
    obj = getattr(module, attr, None)
    if obj is None:
        return None, f"module '{module_name}' has no attribute '{attr}'"
    spec = spec_of(obj)
    if spec is None:
        return None, f"'{path}' is not a chordflow task (decorate it with @task)"
    return spec, None
