"""The ``@task`` decorator and the data it records about a task function.

A task is a plain function; the decorator only inspects its signature and
stores policy as data (retry, timeouts, queue, trigger rule). Nothing here
imports Celery or Redis: ``workers/`` turns a :class:`TaskSpec` into a Celery
task, ``orchestrator/validate.py`` checks pipelines against it.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from orchestrator.errors import TaskDefinitionError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
CONFIG_PARAM = "config"
CONTEXT_PARAM = "ctx"
SPEC_ATTR = "__chordflow_task__"


class TriggerRule(StrEnum):
    """When a task may run, given how its parents ended."""

    ALL_SUCCESS = "all_success"  #: every parent succeeded (default)
    ALWAYS = "always"  #: every parent is finished, whatever the outcome (cleanup, reports)


class TransientError(Exception):
    """Raise to ask for a retry even if the policy's ``retry_on`` does not list the type."""


class PermanentError(Exception):
    """Raise to fail at once: no further attempts, whatever the policy says."""


class RetryPolicy(BaseModel):
    """How often and how soon a failing task is tried again (executed with tenacity)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    attempts: int = Field(1, ge=1, le=100, description="total attempts, including the first")
    backoff_s: float = Field(1.0, ge=0, description="wait before the 2nd attempt; doubles each time")
    backoff_max_s: float = Field(60.0, ge=0, description="cap on any single wait")
    jitter_s: float = Field(1.0, ge=0, description="random extra wait in [0, jitter_s]")
    retry_on: tuple[type[BaseException], ...] = (Exception,)


class TimeoutPolicy(BaseModel):
    """Soft limit raises inside the task; hard limit kills its process."""

    model_config = ConfigDict(frozen=True)

    soft_s: float = Field(300.0, gt=0)
    hard_s: float | None = Field(None, gt=0, description="default: soft_s + 10")

    @model_validator(mode="after")
    def _hard_after_soft(self) -> TimeoutPolicy:
        if self.hard_s is not None and self.hard_s < self.soft_s:
            raise ValueError("hard_s must be >= soft_s")
        return self

    @property
    def hard_limit_s(self) -> float:
        return self.hard_s if self.hard_s is not None else self.soft_s + 10.0


@dataclass(frozen=True)
class TaskSpec:
    """Everything chordflow knows about one task function."""

    name: str
    fn: Callable[..., Any]
    version: str
    retry: RetryPolicy
    timeout: TimeoutPolicy
    queue: str | None
    trigger_rule: TriggerRule
    config_model: type[BaseModel] | None
    result_type: Any  #: the return annotation (``None`` for no result)
    upstream_params: dict[str, Any] = field(default_factory=dict)  #: parameter name -> annotation
    optional_upstreams: frozenset[str] = frozenset()  #: upstream params with a default
    takes_upstream_kwargs: bool = False  #: has ``**upstream``
    wants_context: bool = False
    secret_fields: frozenset[str] = frozenset()
    cache: bool = True  #: pure task: a run with the same fingerprint reuses its result (C5)
    cache_ttl_s: int | None = None  #: how long a cached result is reused; None: until evicted/cleared
    cache_ignore: frozenset[str] = frozenset()  #: params left out of the fingerprint
    inputs: tuple[str, ...] = ()  #: params holding paths of input files/directories, hashed by content
    cache_source: bool = False  #: the function's source is part of the fingerprint

    @property
    def import_path(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__qualname__}"


_REGISTRY: dict[str, TaskSpec] = {}


def registered_tasks() -> dict[str, TaskSpec]:
    """All task specs imported so far, by task name (the workers register each with Celery)."""
    return dict(_REGISTRY)


def spec_of(obj: Any) -> TaskSpec | None:
    """The :class:`TaskSpec` of a decorated function (or the spec itself), else ``None``."""
    if isinstance(obj, TaskSpec):
        return obj
    spec = getattr(obj, SPEC_ATTR, None)
    return spec if isinstance(spec, TaskSpec) else None


def task(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    version: str = "1",
    retry: RetryPolicy | None = None,
    timeout: TimeoutPolicy | float | None = None,
    queue: str | None = None,
    trigger_rule: TriggerRule | str = TriggerRule.ALL_SUCCESS,
    secret_fields: tuple[str, ...] = (),
    cache: bool = True,
    cache_ttl_s: int | None = None,
    cache_ignore: tuple[str, ...] = (),
    inputs: tuple[str, ...] = (),
    cache_source: bool = False,
) -> Any:
    """Declare a chordflow task; usable as ``@task`` or ``@task(name=..., retry=...)``.

    The signature is ``fn(config: SomeModel, <upstream>: ResultType, ..., ctx)``:
    ``config`` (a pydantic model) receives the node's params, every other named
    parameter receives the result of the upstream node of the same name, ``ctx``
    the :class:`~orchestrator.context.TaskContext`. The function is returned
    unchanged (still callable in unit tests) with the spec attached.

    Caching (see ``orchestrator/fingerprint.py``): ``cache=False`` for a task with side effects
    (it always runs, and so do its descendants); ``cache_ttl_s`` bounds how long a result is
    reused; ``cache_ignore`` names params that do not change the result; ``inputs`` names params
    that hold paths of input files or directories (hashed by content); ``cache_source=True`` makes
    an edit of the function's source a miss.

    Raises:
        TaskDefinitionError: the signature or options cannot work; raised at import time.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        spec = _build_spec(
            f,
            name=name,
            version=version,
            retry=retry or RetryPolicy(),
            timeout=_timeout_policy(timeout),
            queue=queue,
            trigger_rule=trigger_rule,
            secret_fields=secret_fields,
            cache=cache,
            cache_ttl_s=cache_ttl_s,
            cache_ignore=cache_ignore,
            inputs=inputs,
            cache_source=cache_source,
        )
        existing = _REGISTRY.get(spec.name)
        if existing is not None and existing.import_path != spec.import_path:
            raise TaskDefinitionError(
                f"task name '{spec.name}' is used by both {existing.import_path} and {spec.import_path}"
            )
        _REGISTRY[spec.name] = spec
        setattr(f, SPEC_ATTR, spec)
        return f

    return decorate(fn) if fn is not None else decorate


def _timeout_policy(timeout: TimeoutPolicy | float | None) -> TimeoutPolicy:
    if timeout is None:
        return TimeoutPolicy()
    if isinstance(timeout, TimeoutPolicy):
        return timeout
    return TimeoutPolicy(soft_s=float(timeout))


def _build_spec(f: Callable[..., Any], **opts: Any) -> TaskSpec:
    where = f"{f.__module__}.{f.__qualname__}"
    name = opts["name"] or f"{f.__module__}.{f.__name__}"
    if not NAME_RE.fullmatch(name):
        raise TaskDefinitionError(f"{where}: task name {name!r} must match {NAME_RE.pattern}")
    try:
        rule = TriggerRule(opts["trigger_rule"])
    except ValueError:
        raise TaskDefinitionError(
            f"{where}: trigger_rule {opts['trigger_rule']!r} is not one of {[r.value for r in TriggerRule]}"
        ) from None
    try:
        hints = typing.get_type_hints(f)
    except Exception as exc:  # unresolved forward reference and the like
        raise TaskDefinitionError(f"{where}: cannot resolve type hints: {exc}") from exc

    config_model: type[BaseModel] | None = None
    upstream: dict[str, Any] = {}
    optional: set[str] = set()
    takes_kwargs = wants_ctx = False
    for pname, param in inspect.signature(f).parameters.items():
        annotation = hints.get(pname, Any)
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TaskDefinitionError(f"{where}: *{pname} is not supported; upstream results arrive by name")
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            takes_kwargs = True
        elif pname == CONTEXT_PARAM:
            wants_ctx = True
        elif pname == CONFIG_PARAM:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise TaskDefinitionError(f"{where}: parameter 'config' must be annotated with a pydantic model")
            config_model = annotation
        else:
            upstream[pname] = annotation
            if param.default is not inspect.Parameter.empty:
                optional.add(pname)

    result_type = hints.get("return", Any)
    if result_type is type(None):
        result_type = None
    if result_type is not None and result_type is not Any:
        try:
            TypeAdapter(result_type).json_schema()
        except Exception as exc:
            raise TaskDefinitionError(f"{where}: return type {result_type!r} is not JSON-serialisable: {exc}") from exc

    fields = set(config_model.model_fields) if config_model is not None else set()
    for opt in ("cache_ignore", "inputs"):
        unknown = sorted(set(opts[opt]) - fields)
        if unknown:
            raise TaskDefinitionError(f"{where}: {opt} names {unknown}, which are not fields of its config model")
    ttl = opts["cache_ttl_s"]
    if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
        raise TaskDefinitionError(f"{where}: cache_ttl_s must be a positive number of seconds")

    return TaskSpec(
        name=name,
        fn=f,
        version=str(opts["version"]),
        retry=opts["retry"],
        timeout=opts["timeout"],
        queue=opts["queue"],
        trigger_rule=rule,
        config_model=config_model,
        result_type=result_type,
        upstream_params=upstream,
        optional_upstreams=frozenset(optional),
        takes_upstream_kwargs=takes_kwargs,
        wants_context=wants_ctx,
        secret_fields=frozenset(opts["secret_fields"]),
        cache=bool(opts["cache"]),
        cache_ttl_s=ttl,
        cache_ignore=frozenset(opts["cache_ignore"]),
        inputs=tuple(opts["inputs"]),
        cache_source=bool(opts["cache_source"]),
    )
