"""C2: expand a validated pipeline into an execution plan of segments.

A *segment* is a maximal short linear run (each member has exactly one parent,
which has exactly one child); it becomes one Celery ``chain``. Everything
between segments is a *join* released by the run ledger in Redis: a per-node
counter of unfinished parents, decremented atomically as each parent settles.
A node therefore starts as soon as its own parents are done, never behind an
unrelated branch, and no chord is ever nested. Children released by the same
parent at once form a *group* on the broker.

Pure: no Celery, no Redis. ``orchestrator/compile.py`` turns segments into
Celery signatures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

from orchestrator.limits import Limits
from orchestrator.model import Pipeline
from orchestrator.spec import TriggerRule
from orchestrator.validate import ensure_valid, graph_of

DEFAULT_MAX_CHAIN = 8


@dataclass(frozen=True)
class NodePlan:
    """How one node runs: which task, on which queue, released by whom."""

    name: str
    task: str
    version: str
    queue: str
    params: dict[str, Any]
    parents: tuple[str, ...]
    children: tuple[str, ...]
    trigger_rule: str
    segment: int
    via_chain: bool  #: dispatched by its predecessor's Celery chain, not by the ledger
    soft_timeout_s: float
    hard_timeout_s: float
    #: a map node (C6): {"over", "max_in_flight", "batch_size", "allow_failed", "stream"}; None otherwise
    map: dict[str, Any] | None = None


@dataclass(frozen=True)
class Segment:
    """A linear run of nodes compiled to one Celery chain (or a single task)."""

    index: int
    nodes: tuple[str, ...]
    released_by: tuple[str, ...]  #: parents of the head; empty for roots


@dataclass
class ExecutionPlan:
    """The plan of one pipeline: topological order, nodes, segments."""

    pipeline: str
    order: list[str]
    nodes: dict[str, NodePlan]
    segments: list[Segment] = field(default_factory=list)

    @property
    def roots(self) -> list[str]:
        return [n for n in self.order if not self.nodes[n].parents]

    def describe(self) -> list[dict[str, Any]]:
        """One row per segment, for ``--dry-run``: order, members, what releases it, its canvas."""
        rows = []
        for seg in self.segments:
            sigs = [f"{self.nodes[n].task}.si(run_id, '{n}')" for n in seg.nodes]
            canvas = sigs[0] if len(sigs) == 1 else "chain(" + ", ".join(sigs) + ")"
            head = self.nodes[seg.nodes[0]]
            if not seg.released_by:
                release = "start of run"
            elif len(seg.released_by) == 1:
                release = f"after {seg.released_by[0]}"
            else:
                release = f"join: counter of {len(seg.released_by)} parents ({', '.join(seg.released_by)})"
            if head.trigger_rule == TriggerRule.ALWAYS:
                release += " [trigger: always]"
            if head.map is not None:
                canvas = f"map over {head.map['over']}: {sigs[0].replace(repr(head.name), repr(head.name + '[i]'))}"
                release += (f" [map: chunk i after chunk i of {head.map['over']}]" if head.map["stream"]
                            else f" [map: one chunk per {head.map['batch_size']} element(s) of its result, "
                                 f"at most {head.map['max_in_flight']} in flight]")  # fmt: skip
            rows.append(
                {
                    "segment": seg.index,
                    "tasks": list(seg.nodes),
                    "release": release,
                    "canvas": canvas,
                    "queue": head.queue,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly data (tuples become lists); :meth:`from_dict` gives the same plan back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionPlan:
        """The plan :meth:`to_dict` wrote: a web process compiles it without importing any task code."""
        nodes = {}
        for name, n in data["nodes"].items():
            nodes[name] = NodePlan(
                **{**n, "parents": tuple(n["parents"]), "children": tuple(n["children"]), "params": dict(n["params"])}
            )
        segments = [
            Segment(index=s["index"], nodes=tuple(s["nodes"]), released_by=tuple(s["released_by"]))
            for s in data["segments"]
        ]
        return cls(pipeline=data["pipeline"], order=list(data["order"]), nodes=nodes, segments=segments)

    def fan_outs(self) -> dict[str, list[str]]:
        """Parents that release several segment heads at once (a group on the broker)."""
        out = {}
        for name in self.order:
            heads = [c for c in self.nodes[name].children if not self.nodes[c].via_chain]
            if len(heads) > 1:
                out[name] = heads
        return out


def _map_plan(node: Any, by_name: dict[str, Any]) -> dict[str, Any] | None:
    m = node.map
    if m is None:
        return None
    return {"over": m.over, "max_in_flight": m.max_in_flight, "batch_size": m.batch_size,
            "allow_failed": m.allow_failed, "stream": by_name[m.over].map is not None}  # fmt: skip


def build_plan(
    pipeline: Pipeline, default_queue: str, max_chain: int = DEFAULT_MAX_CHAIN, limits: Limits | None = None
) -> ExecutionPlan:
    """Validate ``pipeline`` and expand it into an :class:`ExecutionPlan`.

    Raises:
        PipelineInvalid: the pipeline failed validation.
    """
    ensure_valid(pipeline, limits)
    g = graph_of(pipeline)
    order = list(nx.lexicographical_topological_sort(g))
    by_name = {n.name: n for n in pipeline.nodes}

    segment_of: dict[str, int] = {}
    members: list[list[str]] = []
    via_chain: set[str] = set()
    for name in order:
        parents = list(g.predecessors(name))
        rule = by_name[name].spec.trigger_rule
        # a map node and the children of one are released by the ledger (a map ends in the ledger when its
        # last chunk settles, never by a Celery task returning)
        chainable = by_name[name].map is None and not any(by_name[p].map is not None for p in parents)
        if len(parents) == 1 and rule is TriggerRule.ALL_SUCCESS and chainable:
            parent = parents[0]
            seg = members[segment_of[parent]]
            if g.out_degree(parent) == 1 and seg[-1] == parent and len(seg) < max_chain:
                seg.append(name)
                segment_of[name] = segment_of[parent]
                via_chain.add(name)
                continue
        segment_of[name] = len(members)
        members.append([name])

    nodes = {}
    for name in order:
        node = by_name[name]
        spec = node.spec
        nodes[name] = NodePlan(
            name=name,
            task=spec.name,
            version=spec.version,
            queue=spec.queue or default_queue,
            params=dict(node.params),
            parents=tuple(node.depends_on),
            children=tuple(sorted(g.successors(name))),
            trigger_rule=spec.trigger_rule.value,
            segment=segment_of[name],
            via_chain=name in via_chain,
            soft_timeout_s=spec.timeout.soft_s,
            hard_timeout_s=spec.timeout.hard_limit_s,
            map=_map_plan(node, by_name),
        )
    segments = [
        Segment(index=i, nodes=tuple(m), released_by=tuple(sorted(g.predecessors(m[0])))) for i, m in enumerate(members)
    ]
    return ExecutionPlan(pipeline=pipeline.name, order=order, nodes=nodes, segments=segments)
