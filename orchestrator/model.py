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


@dataclass(frozen=True)
class Node:
    """One step of a pipeline: a task under a node name, with params and parents."""

    name: str
    spec: TaskSpec
    depends_on: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


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
            Node(n.name, n.spec, n.depends_on, deep_merge(n.params, overrides.get(n.name, {}))) for n in self.nodes
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
