"""The pipeline model: named nodes, each a task with params and dependencies.

Building a pipeline never raises on graph problems: they are all collected by
:func:`orchestrator.validate.validate`, so a user sees every problem at once.
No Celery and no Redis here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.errors import PipelineInvalid, Problem, TaskDefinitionError
from orchestrator.spec import TaskSpec, spec_of

if TYPE_CHECKING:
    from orchestrator.notify import NotifyConfig


DEFAULT_MAX_IN_FLIGHT = 64


@dataclass(frozen=True)
class MapSpec:
    """C6: run the node's task once per element of what its ``over`` parent returns.

    The width is decided at run time, when ``over`` finishes. ``batch_size`` elements share one chunk
    (one Celery message, one attempt, one retry); the task is still called once per element.
    ``max_in_flight`` bounds the chunks queued or running at a time. ``allow_failed``: how many chunks
    may fail (an int) or which fraction of them (a float below 1) with the map still succeeding.
    """

    over: str
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    batch_size: int = 1
    allow_failed: int | float = 0

    def allowed_failures(self, chunks: int) -> int:
        """Failed chunks tolerated out of ``chunks``."""
        if isinstance(self.allow_failed, float) and self.allow_failed < 1:
            return int(self.allow_failed * chunks)
        return int(self.allow_failed)


@dataclass(frozen=True)
class Node:
    """One step of a pipeline: a task under a node name, with params and parents (and, for a map node,
    how it fans out)."""

    name: str
    spec: TaskSpec
    depends_on: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    map: MapSpec | None = None


@dataclass
class Pipeline:
    """A named DAG of task nodes.

    >>> Pipeline("etl").add_task(ingest).add_task(clean, depends_on=["ingest"])
    """

    name: str
    source: str | None = None  #: the file it was loaded from, for error messages
    nodes: list[Node] = field(default_factory=list)
    notify: NotifyConfig | None = None  #: run-end notifications (``[notify]``); per-run config adds to it

    def add_task(
        self,
        fn: Callable[..., Any] | TaskSpec,
        *,
        name: str | None = None,
        depends_on: Iterable[str] = (),
        params: Mapping[str, Any] | None = None,
    ) -> Pipeline:
        """Add a node running ``fn`` (a ``@task`` function); returns the pipeline for chaining.

        Raises:
            TaskDefinitionError: ``fn`` is not decorated with ``@task``.
        """
        spec = spec_of(fn)
        if spec is None:
            raise TaskDefinitionError(f"{fn!r} is not a chordflow task: decorate it with @task")
        node_name = name or spec.fn.__name__
        if isinstance(depends_on, str):
            depends_on = [depends_on]
        self.nodes.append(Node(node_name, spec, tuple(depends_on), dict(params or {})))
        return self

    def add_map(
        self,
        fn: Callable[..., Any] | TaskSpec,
        *,
        over: str,
        name: str | None = None,
        depends_on: Iterable[str] = (),
        params: Mapping[str, Any] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        batch_size: int = 1,
        allow_failed: int | float = 0,
    ) -> Pipeline:
        """Add a map node: ``fn`` runs once per element of the list task ``over`` returns; its parameter
        named ``over`` receives one element. Over another map node, chunk *i* starts as soon as chunk *i*
        of that map is done (no barrier). A node depending on a map receives its results in input order
        (annotate the parameter ``MapResults[T]`` to stream them, or ``list[T]``)."""
        if isinstance(depends_on, str):
            depends_on = [depends_on]
        deps = tuple(dict.fromkeys([over, *depends_on]))
        self.add_task(fn, name=name, depends_on=deps, params=params)
        node = self.nodes[-1]
        self.nodes[-1] = Node(node.name, node.spec, node.depends_on, node.params,
                              MapSpec(over, max_in_flight, batch_size, allow_failed))  # fmt: skip
        return self

    def node(self, name: str) -> Node:
        """The node called ``name`` (first one, if duplicated)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def with_params(self, overrides: Mapping[str, Mapping[str, Any]]) -> Pipeline:
        """A copy whose nodes' params are deep-merged with ``{node: {field: value}}``.

        Nested mappings merge (``{"db": {"port": 1}}`` keeps ``db.host``); other values replace.

        Raises:
            PipelineInvalid: ``overrides`` names a task the pipeline does not have (a typo would
                otherwise run silently with the file's params).
        """
        names = self.node_names
        unknown = [
            Problem(f"params given for unknown task (tasks: {', '.join(names)})", task=str(n), file=self.source)
            for n in overrides
            if n not in names
        ]
        unknown += [
            Problem(f"params must be a mapping of field to value, got {type(v).__name__}", task=n, file=self.source)
            for n, v in overrides.items()
            if n in names and not isinstance(v, Mapping)
        ]
        if unknown:
            raise PipelineInvalid(unknown)
        nodes = [
            Node(n.name, n.spec, n.depends_on, deep_merge(n.params, overrides.get(n.name, {})), n.map)
            for n in self.nodes
        ]
        return Pipeline(self.name, self.source, nodes, self.notify)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, merging nested mappings instead of replacing them."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
