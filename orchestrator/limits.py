"""Input limits checked before the expensive validation, so no input can stall Redis or a worker.

A pipeline past these limits is refused with a clear problem before anything
is planned or queued: too many tasks (validating a million nodes takes
minutes and gigabytes), too many children of one task (their release is one
Lua call that blocks every Redis client), params nested deeper than Redis'
cjson decodes (a Lua error there would leave a child pending forever).
Every check here is linear and iterative: it cannot itself recurse too deep.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import Problem

DEFAULT_MAX_NODES = 100_000
DEFAULT_MAX_FAN_OUT = 10_000
DEFAULT_MAX_PARAM_DEPTH = 32


@dataclass(frozen=True)
class Limits:
    max_nodes: int = DEFAULT_MAX_NODES
    max_fan_out: int = DEFAULT_MAX_FAN_OUT
    max_param_depth: int = DEFAULT_MAX_PARAM_DEPTH

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.max_nodes, settings.max_fan_out, settings.max_param_depth)


def check_node_count(count: int, limits: Limits, src: str | None) -> list[Problem]:
    if count > limits.max_nodes:
        return [Problem(f"pipeline has {count} tasks, over max_nodes ({limits.max_nodes})", file=src)]
    return []


def check_limits(pipeline: Any, limits: Limits | None = None) -> list[Problem]:
    """Problems with the size and shape of ``pipeline``; cheap, and first, so nothing else runs on a huge input."""
    limits = limits or Limits()
    src = pipeline.source
    problems = check_node_count(len(pipeline.nodes), limits, src)
    if problems:
        return problems
    children: Counter[str] = Counter()
    for node in pipeline.nodes:
        children.update(set(node.depends_on))
    for parent, count in children.items():
        if count > limits.max_fan_out:
            problems.append(
                Problem(f"has {count} dependent tasks, over max_fan_out ({limits.max_fan_out})", task=parent, file=src)
            )
    for node in pipeline.nodes:
        where = too_deep(node.params, limits.max_param_depth)
        if where is not None:
            problems.append(
                Problem(
                    f"params are nested deeper than max_param_depth ({limits.max_param_depth})",
                    task=node.name,
                    file=src,
                    field=".".join(["params", *where]),
                )
            )
    return problems


def too_deep(value: Any, max_depth: int) -> list[str] | None:
    """The path (first 8 keys) to where ``value`` nests deeper than ``max_depth`` containers, or None."""
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            entries = [(str(k), v) for k, v in item.items()]
        elif isinstance(item, list | tuple):
            entries = [(str(i), v) for i, v in enumerate(item)]
        else:
            continue
        if depth >= max_depth:
            return [*path[:8], "..."] if len(path) > 8 else list(path)
        for key, child in entries:
            stack.append((child, depth + 1, (*path, key) if len(path) <= 8 else path))
    return None
