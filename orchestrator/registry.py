"""Published pipelines: a web process submits by name, with no task code and no TOML at hand.

``chordflow publish FILE`` (and every worker at start, for the files in the
``publish_pipelines`` setting) validates a pipeline where its task code is
importable and stores in Redis (hash :data:`orchestrator.keys.PIPELINES`) what a
submit needs: the execution plan as JSON (task names, versions, queues, default
params, parents, children, trigger rules, segments, timeouts: everything
:mod:`orchestrator.compile` reads), each node's params JSON Schema (strict, see
:mod:`orchestrator.params_schema`), its secret fields, a description,
``published_at`` (Redis time) and a content hash. :meth:`PublishedPipeline.plan_with`
merges a submit's params into the defaults and checks them against the schemas.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from orchestrator import keys
from orchestrator.errors import ChordflowError, PipelineInvalid, Problem
from orchestrator.limits import Limits, too_deep
from orchestrator.model import Pipeline, deep_merge
from orchestrator.params_schema import check_params, strict_schema
from orchestrator.plan import ExecutionPlan
from orchestrator.redact import Masker, secret_paths

FORMAT = 1  #: version of the record layout


class PipelineNotFound(ChordflowError):
    """No pipeline of that name was published (``chordflow publish FILE``, or list it in ``publish_pipelines``)."""


@dataclass(frozen=True)
class PublishedPipeline:
    """One published pipeline, as a web process sees it."""

    name: str
    source: str
    description: str
    plan: ExecutionPlan
    schemas: dict[str, dict[str, Any] | None]  #: node -> strict params JSON Schema (None: takes no params)
    secrets: dict[str, dict[str, list[Any]]]  #: node -> {"paths": [[...]], "names": [...]}
    published_at: float = 0.0
    hash: str = ""
    notify: dict[str, Any] | None = None  #: the file's [notify] (never shown by the API: URLs may hold tokens)

    def content(self) -> dict[str, Any]:
        """What the hash covers: everything but where and when it was published."""
        return {"format": FORMAT, "name": self.name, "description": self.description, "plan": self.plan.to_dict(),
                "schemas": self.schemas, "secrets": self.secrets, "notify": self.notify}  # fmt: skip

    def content_hash(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(
            {**self.content(), "source": self.source, "published_at": self.published_at, "hash": self.hash},
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def from_json(cls, raw: str) -> PublishedPipeline:
        d = json.loads(raw)
        return cls(
            name=d["name"], source=d.get("source", ""), description=d.get("description", ""),
            plan=ExecutionPlan.from_dict(d["plan"]), schemas=d["schemas"], secrets=d.get("secrets", {}),
            published_at=float(d.get("published_at", 0)), hash=d.get("hash", ""), notify=d.get("notify"),
        )  # fmt: skip

    def masker(self, node: str) -> Masker:
        """Masks the node's secret params (by type and by ``secret_fields``) in anything shown."""
        s = self.secrets.get(node, {})
        return Masker(paths=frozenset(tuple(p) for p in s.get("paths", [])), names=frozenset(s.get("names", [])))

    def defaults(self) -> dict[str, dict[str, Any]]:
        """Each node's params as published, secrets masked."""
        return {n: self.masker(n).data(p.params) for n, p in self.plan.nodes.items()}

    def plan_with(self, params: Mapping[str, Any] | None, limits: Limits | None = None) -> ExecutionPlan:
        """The plan with ``{node: {field: value}}`` deep-merged into the defaults and checked strictly.

        Raises:
            PipelineInvalid: unknown task, unknown field at any depth, wrong type or range; each
                problem names the task and the field path.
        """
        params = dict(params or {})
        limits = limits or Limits()
        names = list(self.plan.order)
        problems = [
            Problem(f"params given for unknown task (tasks: {', '.join(names)})", task=str(n))
            for n in params
            if n not in self.plan.nodes
        ]
        problems += [
            Problem(f"params must be a mapping of field to value, got {type(v).__name__}", task=n)
            for n, v in params.items()
            if n in self.plan.nodes and not isinstance(v, Mapping)
        ]
        for n, v in params.items():
            where = too_deep(v, limits.max_param_depth) if n in self.plan.nodes else None
            if where is not None:
                problems.append(Problem(f"params are nested deeper than max_param_depth ({limits.max_param_depth})",
                                        task=n, field=".".join(["params", *where])))  # fmt: skip
        if problems:
            raise PipelineInvalid(problems)
        nodes = {}
        for name, node in self.plan.nodes.items():
            merged = deep_merge(node.params, params[name]) if name in params else node.params
            names_secret = frozenset(self.secrets.get(name, {}).get("names", []))
            problems += check_params(name, self.schemas.get(name), merged, names_secret)
            nodes[name] = dataclasses.replace(node, params=merged)
        if problems:
            raise PipelineInvalid(problems)
        return dataclasses.replace(self.plan, nodes=nodes)


def describe(pipeline: Pipeline, plan: ExecutionPlan, description: str = "") -> PublishedPipeline:
    """The record of a validated ``pipeline`` (needs its task code: the config models give the schemas)."""
    schemas: dict[str, dict[str, Any] | None] = {}
    secrets: dict[str, dict[str, list[Any]]] = {}
    for node in pipeline.nodes:
        model = node.spec.config_model
        schemas[node.name] = None if model is None else strict_schema(model.model_json_schema())
        secrets[node.name] = {
            "paths": sorted(list(p) for p in secret_paths(model)),
            "names": sorted(node.spec.secret_fields),
        }
    notify = pipeline.notify.model_dump(mode="json") if pipeline.notify is not None else None
    pub = PublishedPipeline(pipeline.name, pipeline.source or "", description, plan, schemas, secrets, notify=notify)
    return dataclasses.replace(pub, hash=pub.content_hash())


def file_description(path: str | Path) -> str:
    """The ``[pipeline] description`` of a TOML pipeline file ("" if none; the loader checked the file)."""
    try:
        header = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("pipeline", {})
    except (OSError, ValueError, RecursionError):
        return ""
    return str(header.get("description", "")) if isinstance(header, dict) else ""


class Registry:
    """Reads and writes of :data:`orchestrator.keys.PIPELINES`."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def publish(self, pub: PublishedPipeline) -> bool:
        """Store ``pub`` stamped with Redis time; False (nothing written) if the same content is there already."""
        current = self.r.hget(keys.PIPELINES, pub.name)
        if current is not None:
            try:
                if json.loads(current).get("hash") == pub.hash:
                    return False
            except ValueError:
                pass
        sec, usec = self.r.time()
        stamped = dataclasses.replace(pub, published_at=round(sec + usec / 1e6, 6))
        self.r.hset(keys.PIPELINES, pub.name, stamped.to_json())
        return True

    def get(self, name: str) -> PublishedPipeline:
        raw = self.r.hget(keys.PIPELINES, name)
        if raw is None:
            raise PipelineNotFound(
                f"no published pipeline '{name}': publish it with `chordflow publish FILE` "
                "(workers publish the files in the publish_pipelines setting when they start)"
            )
        return PublishedPipeline.from_json(raw)

    def all(self) -> list[PublishedPipeline]:
        return [PublishedPipeline.from_json(raw) for _, raw in sorted(self.r.hgetall(keys.PIPELINES).items())]


def pipeline_files(patterns: list[str], base: Path) -> list[Path]:
    """The files matching ``patterns`` (globs, ``**`` allowed), relative ones under ``base``; sorted, unique."""
    found: set[Path] = set()
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        found.update(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
    return sorted(found)


def publish_file(registry: Registry, path: str | Path, settings: Any) -> tuple[PublishedPipeline, bool]:
    """Load, validate, plan and publish one pipeline file (its task code must import here).

    Raises:
        PipelineInvalid: the file does not load or validate; nothing is published.
    """
    from orchestrator.loader import load_pipeline
    from orchestrator.plan import build_plan

    limits = Limits.from_settings(settings)
    pipeline = load_pipeline(path, tuple(settings.allowed_task_prefixes), limits)
    plan = build_plan(pipeline, settings.default_queue, settings.max_chain, limits)
    pub = describe(pipeline, plan, file_description(path))
    return pub, registry.publish(pub)
