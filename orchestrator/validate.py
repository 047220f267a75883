"""C1: every check a pipeline must pass before anything is queued.

Each finding is a :class:`~orchestrator.errors.Problem` naming the file, task
and field; :func:`validate` returns them all, :func:`ensure_valid` raises.
Graph questions are answered by networkx.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

import networkx as nx
from pydantic import AliasChoices, BaseModel, TypeAdapter, ValidationError

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
        problems.extend(_check_map(node, names, src))

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
    problems = [
        Problem(f"unknown field (known: {', '.join(known) or 'none'})", task=node.name, file=src, field=path)
        for path, known in unknown_fields(model, dict(node.params), "params")
    ]
    try:
        model.model_validate(dict(node.params))
    except ValidationError as exc:
        problems += [
            Problem(
                f"{err['msg']} (got {err.get('input')!r})" if err["type"] != "missing" else "required param missing",
                task=node.name,
                file=src,
                field="params." + ".".join(str(p) for p in err["loc"]),
            )
            for err in exc.errors()
            if err["type"] != "extra_forbidden"  # reported above, with the known fields
        ]
    return problems


def unknown_fields(annotation: Any, data: Any, path: str) -> list[tuple[str, list[str]]]:
    """``(field path, known fields)`` for every key of ``data`` no model along ``annotation`` declares.

    Pydantic ignores unknown keys unless a model sets ``extra='forbid'``, so a typo such as
    ``pagez`` would silently run with the default. This walks the input against the type, at any
    depth: nested models, lists/tuples/sets of models, dict values, optionals and unions. A model
    that sets ``extra='allow'`` keeps its extra keys.
    """
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _unknown_in_model(annotation, data, path)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _union_members(annotation) is not None:
        member = _union_member_for(args, data)
        return [] if member is None else unknown_fields(member, data, path)
    if origin in (list, set, frozenset, collections.abc.Sequence, collections.abc.Set) and args:
        if isinstance(data, list | tuple):
            return [hit for i, item in enumerate(data) for hit in unknown_fields(args[0], item, f"{path}.{i}")]
    elif origin is tuple and args and isinstance(data, list | tuple):
        items = args if not (len(args) == 2 and args[1] is Ellipsis) else (args[0],) * len(data)
        return [
            hit
            for i, (t, item) in enumerate(zip(items, data, strict=False))
            for hit in unknown_fields(t, item, f"{path}.{i}")
        ]
    elif origin in (dict, collections.abc.Mapping) and len(args) == 2 and isinstance(data, dict):
        return [hit for k, v in data.items() for hit in unknown_fields(args[1], v, f"{path}.{k}")]
    return []


def _unknown_in_model(model: type[BaseModel], data: Any, path: str) -> list[tuple[str, list[str]]]:
    if isinstance(data, BaseModel) or not isinstance(data, dict):
        return []
    by_key: dict[str, str] = {}
    for name, info in model.model_fields.items():
        by_key[name] = name
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                by_key[alias] = name
            elif isinstance(alias, AliasChoices):
                by_key.update({c: name for c in alias.choices if isinstance(c, str)})
    hits: list[tuple[str, list[str]]] = []
    for key, value in data.items():
        name = by_key.get(str(key))
        if name is None:
            if model.model_config.get("extra") != "allow":
                hits.append((f"{path}.{key}", sorted(model.model_fields)))
            continue
        hits += unknown_fields(model.model_fields[name].annotation, value, f"{path}.{key}")
    return hits


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_member_for(members: tuple[Any, ...], data: Any) -> Any:
    """The union member ``data`` is meant for (the one of its shape, or the first model it validates as)."""
    mapping, sequence = isinstance(data, dict), isinstance(data, list | tuple)
    fitting = []
    for m in map(_unwrap, members):
        origin = typing.get_origin(m)
        is_model = isinstance(m, type) and issubclass(m, BaseModel)
        if mapping and (is_model or origin in (dict, collections.abc.Mapping)):
            fitting.append(m)
        elif sequence and origin in (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set):
            fitting.append(m)
    if len(fitting) <= 1:
        return fitting[0] if fitting else None
    for m in fitting:
        try:
            TypeAdapter(m).validate_python(data)
        except ValidationError:
            continue
        return m
    return None


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
        if node.map is not None and pname == node.map.over:
            continue  # one element of it: checked by _check_map
        if upstream.map is not None:
            # the results of a map, element by element: MapResults[T], list[T], Iterable[T] or Any
            produced, wanted = upstream.spec.result_type, _element_type(wanted)
            if wanted is _NOT_A_SEQUENCE:
                problems.append(Problem(
                    f"input '{pname}' is a map: annotate it MapResults[T] (streamed) or list[T]", task=node.name,
                    file=src))  # fmt: skip
                continue
        if not _fits(produced, wanted, allow_none=spec.trigger_rule is TriggerRule.ALWAYS):
            problems.append(
                Problem(
                    f"input '{pname}' expects {_type_name(wanted)} but task '{pname}' returns {_type_name(produced)}",
                    task=node.name,
                    file=src,
                )
            )
    return problems


_NOT_A_SEQUENCE = object()
MAX_IN_FLIGHT = 10_000  #: chunks one ledger step may dispatch at once (as max_fan_out bounds a release)


def _element_type(tp: Any) -> Any:
    """The element type of a list-like annotation (``Any`` when unparameterised); ``_NOT_A_SEQUENCE`` otherwise."""
    from orchestrator.map_results import MapResults

    tp = _unwrap(tp)
    if tp is Any:
        return Any
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (list, tuple, MapResults) or origin in (
        list, tuple, MapResults, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Iterator,
    ):  # fmt: skip
        return args[0] if args and args[0] is not Ellipsis else Any
    return _NOT_A_SEQUENCE


def _check_map(node: Any, names: dict[str, Any], src: str | None) -> list[Problem]:
    """A map node: what it maps over exists and returns a list, its task takes one element, its options."""
    m = node.map
    if m is None:
        return []
    out = []

    def problem(msg: str, field: str | None = None) -> None:
        out.append(Problem(msg, task=node.name, file=src, field=field))

    if not isinstance(m.max_in_flight, int) or not 1 <= m.max_in_flight <= MAX_IN_FLIGHT:
        problem(f"max_in_flight must be an integer from 1 to {MAX_IN_FLIGHT}", "map.max_in_flight")
    if node.spec.trigger_rule is TriggerRule.ALWAYS:
        problem("a map node cannot use trigger_rule 'always': it needs the elements of what it maps over")
    if not isinstance(m.batch_size, int) or m.batch_size < 1:
        problem("batch_size must be a positive integer", "map.batch_size")
    if isinstance(m.allow_failed, bool) or not isinstance(m.allow_failed, int | float) or m.allow_failed < 0:
        problem("allow_failed must be a count (int >= 0) or a fraction (0 <= float < 1)", "map.allow_failed")
    elif isinstance(m.allow_failed, float) and m.allow_failed >= 1:
        problem("allow_failed as a float is a fraction of the chunks and must be below 1", "map.allow_failed")
    spec, over = node.spec, names.get(m.over)
    if m.over not in spec.upstream_params and not spec.takes_upstream_kwargs:
        problem(f"maps over '{m.over}': its task needs a parameter named '{m.over}' (it receives one element)")
    if over is None:
        if m.over not in node.depends_on:
            problem(f"maps over unknown task '{m.over}'", "map.over")
        return out
    wanted = spec.upstream_params.get(m.over, Any)
    if over.map is not None:  # map after map: chunk i of this map takes chunk i's results of that one
        if set(node.depends_on) != {m.over}:
            problem(f"maps over map '{m.over}' (streamed chunk by chunk): it cannot depend on other tasks",
                    "depends_on")  # fmt: skip
        if m.batch_size != 1:
            problem(f"maps over map '{m.over}': it keeps that map's chunks, so batch_size cannot be set",
                    "map.batch_size")  # fmt: skip
        produced = over.spec.result_type
    else:
        produced = _element_type(over.spec.result_type)
        if produced is _NOT_A_SEQUENCE:
            problem(f"maps over '{m.over}', which returns {_type_name(over.spec.result_type)}, not a list",
                    "map.over")  # fmt: skip
            return out
    if not _fits(produced, wanted):
        problem(f"input '{m.over}' expects {_type_name(wanted)} but an element of '{m.over}' is "
                f"{_type_name(produced)}")  # fmt: skip
    return out


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
