"""The pipeline model: named nodes, each a task with params and dependencies.

Building a pipeline never raises on graph problems: they are all collected by
:func:`orchestrator.validate.validate`, so a user sees every problem at once.
No Celery and no Redis here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import TaskDefinitionError
from orchestrator.spec import TaskSpec, spec_of


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
        """A copy whose nodes' params are updated from ``{node: {field: value}}``."""
        nodes = [Node(n.name, n.spec, n.depends_on, {**n.params, **overrides.get(n.name, {})}) for n in self.nodes]
        return Pipeline(self.name, self.source, nodes)
