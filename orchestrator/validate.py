"""C1: every check a pipeline must pass before anything is queued.

Each finding is a :class:`~orchestrator.errors.Problem` naming the file, task
and field; :func:`validate` returns them all, :func:`ensure_valid` raises.
Graph questions are answered by networkx.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import networkx as nx
from pydantic import ValidationError

from orchestrator.artifacts import RESERVED_NAMES, is_reserved
from orchestrator.errors import PipelineInvalid, Problem
from orchestrator.limits import Limits, check_limits
from orchestrator.model import Pipeline
from orchestrator.spec import NAME_RE, TriggerRule

MAX_CYCLES_REPORTED = 5


def validate(pipeline: Pipeline, limits: Limits | None = None) -> list[Problem]:
    """All problems of ``pipeline``; an empty list means it may run."""
    problems = check_limits(pipeline, limits)
    if problems:  # too big or too deep to check any further
        return problems
    src = pipeline.source
    seen: set[str] = set()
    for node in pipeline.nodes:
        if node.name in seen:
            problems.append(Problem("duplicate task name", task=node.name, file=src))
        seen.add(node.name)
        if not NAME_RE.fullmatch(node.name) or ".." in node.name:
            problems.append(Problem(f"task name must match {NAME_RE.pattern}", task=node.name, file=src))
        elif is_reserved(node.name):
            problems.append(
                Problem(
                    f"task name is reserved for chordflow's own files {sorted(RESERVED_NAMES)}",
                    task=node.name,
                    file=src,
                )
            )
    if not pipeline.nodes:
        problems.append(Problem("pipeline has no tasks", file=src))

    names = {n.name: n for n in pipeline.nodes}
    for node in pipeline.nodes:
        for dep in node.depends_on:
            if dep not in names:
                problems.append(Problem(f"depends on unknown task '{dep}'", task=node.name, file=src))
            elif dep == node.name:
                problems.append(Problem("depends on itself", task=node.name, file=src))
        problems.extend(_check_params(node, src))
        problems.extend(_check_inputs(node, names, src))

    problems.extend(_check_cycles(pipeline))
    return problems


def ensure_valid(pipeline: Pipeline, limits: Limits | None = None) -> None:
    """Raise :class:`PipelineInvalid` listing every problem, if there is any."""
    problems = validate(pipeline, limits)
    if problems:
        raise PipelineInvalid(problems)


def graph_of(pipeline: Pipeline) -> nx.DiGraph:
    """The dependency graph, edges parent -> child."""
    g = nx.DiGraph()
    for node in pipeline.nodes:
        g.add_node(node.name)
        for dep in node.depends_on:
            g.add_edge(dep, node.name)
    return g


def _check_cycles(pipeline: Pipeline) -> list[Problem]:
    g = graph_of(pipeline)
    g.remove_edges_from(list(nx.selfloop_edges(g)))
    problems = []
    for i, cycle in enumerate(nx.simple_cycles(g)):
        if i >= MAX_CYCLES_REPORTED:
            break
        start = min(range(len(cycle)), key=lambda k: cycle[k])  # stable text: start at the smallest name
        ordered = cycle[start:] + cycle[:start]
        path = " -> ".join([*ordered, ordered[0]])
        problems.append(Problem(f"dependency cycle: {path}", file=pipeline.source))
    return problems


def _check_params(node: Any, src: str | None) -> list[Problem]:
    model = node.spec.config_model
    if model is None:
        if node.params:
            return [Problem(f"takes no params but got {sorted(node.params)}", task=node.name, file=src)]
        return []
    try:
        model.model_validate(dict(node.params))
    except ValidationError as exc:
        return [
            Problem(
                f"{err['msg']} (got {err.get('input')!r})" if err["type"] != "missing" else "required param missing",
                task=node.name,
                file=src,
                field="params." + ".".join(str(p) for p in err["loc"]),
            )
            for err in exc.errors()
        ]
    return []


def _check_inputs(node: Any, names: dict[str, Any], src: str | None) -> list[Problem]:
    """Upstream parameters must have a dependency of that name whose result type fits."""
    problems = []
    spec = node.spec
    for pname, wanted in spec.upstream_params.items():
        if pname not in node.depends_on:
            if pname not in spec.optional_upstreams:
                problems.append(
                    Problem(f"parameter '{pname}' has no dependency named '{pname}'", task=node.name, file=src)
                )
            continue
        upstream = names.get(pname)
        if upstream is None:
            continue  # reported as an unknown dependency
        produced = upstream.spec.result_type
        if not _fits(produced, wanted, allow_none=spec.trigger_rule is TriggerRule.ALWAYS):
            problems.append(
                Problem(
                    f"input '{pname}' expects {_type_name(wanted)} but task '{pname}' returns {_type_name(produced)}",
                    task=node.name,
                    file=src,
                )
            )
    return problems


def _fits(produced: Any, wanted: Any, allow_none: bool = False) -> bool:
    """Whether a result of type ``produced`` can be handed to a parameter typed ``wanted``."""
    if wanted is Any or produced is Any:
        return True
    options = _union_members(wanted)
    if options is not None:
        return any(_fits(produced, w) for w in options if w is not type(None)) or (
            produced is None and type(None) in options
        )
    if produced is None:
        return wanted is None or allow_none
    if isinstance(produced, type) and isinstance(wanted, type):
        return issubclass(produced, wanted)
    return bool(produced == wanted or typing.get_origin(produced) == wanted)


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _type_name(tp: Any) -> str:
    if tp is None:
        return "None"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
