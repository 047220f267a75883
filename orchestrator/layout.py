"""Where the dashboard draws each task of a run: layers by longest path, groups for big runs.

Computed once per run from its static node records (the graph never changes while it runs) and
cached by the API. A run of hundreds of tasks stays readable because siblings that share a name
prefix in the same layer (``n3_0 .. n3_99``, ``shard-1 .. shard-40``) collapse into one group box,
whose members the page lists on demand instead of drawing them. A map node is one box already:
its chunks are a bar, never nodes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx

GROUP_ABOVE = 40  #: runs with more tasks than this collapse same-prefix siblings of a layer into groups
GROUP_MIN = 3  #: fewest siblings that make a group
_SUFFIX = re.compile(r"[_\-.:]?\d+$")


@dataclass
class Box:
    """One drawn box: a task, or a group of same-prefix siblings in one layer."""

    id: str
    label: str
    layer: int
    row: int
    members: list[str] = field(default_factory=list)  #: a group's tasks (empty for a task)
    task: str = ""  #: the task function's name (a task box)
    map: bool = False


@dataclass
class Layout:
    boxes: list[Box]
    edges: list[tuple[str, str]]  #: (box id, box id), deduplicated
    box_of: dict[str, str]  #: task -> the box it is drawn in
    layers: int
    rows: int


def prefix(name: str) -> str | None:
    """The group key of a task name (``n3_17`` -> ``n3``), or None if it has no numeric suffix."""
    stripped = _SUFFIX.sub("", name)
    return stripped if stripped and stripped != name else None


def layout(parents: dict[str, list[str]], tasks: dict[str, str] | None = None,
           maps: set[str] | None = None, group_above: int = GROUP_ABOVE) -> Layout:  # fmt: skip
    """Layers by longest path from the roots (networkx topological generations); within a layer, rows
    ordered by the mean row of their parents (one barycentre pass: fewer crossings, still linear).

    Parameters:
        parents: task -> its parents (every task of the run is a key).
        tasks: task -> task function name, shown on hover.
        maps: the map nodes.
        group_above: collapse same-prefix siblings when the run has more tasks than this.
    """
    tasks, maps = tasks or {}, maps or set()
    g = nx.DiGraph()
    g.add_nodes_from(parents)
    g.add_edges_from((p, n) for n, ups in parents.items() for p in ups if p in parents)
    generations = [sorted(gen) for gen in nx.topological_generations(g)]
    group = len(parents) > group_above
    boxes: list[Box] = []
    box_of: dict[str, str] = {}
    row_of: dict[str, float] = {}
    for depth, gen in enumerate(generations):
        by_prefix: dict[str, list[str]] = defaultdict(list)
        singles: list[str] = []
        for name in gen:
            key = prefix(name) if group and name not in maps else None
            (by_prefix[key] if key else singles).append(name)
        units: list[tuple[str, list[str]]] = []
        for key, members in by_prefix.items():
            if len(members) >= GROUP_MIN:
                units.append((f"group:{depth}:{key}", members))
            else:
                singles.extend(members)
        units += [(name, [name]) for name in singles]

        def centre(unit: tuple[str, list[str]]) -> tuple[float, str]:
            ups = [row_of[p] for m in unit[1] for p in parents.get(m, ()) if p in row_of]
            return (sum(ups) / len(ups) if ups else -1.0, unit[0])

        units.sort(key=centre)
        for row, (uid, members) in enumerate(units):
            if uid.startswith("group:"):
                label = f"{uid.split(':', 2)[2]}* ({len(members)})"
                boxes.append(Box(uid, label, depth, row, members=sorted(members, key=_natural)))
            else:
                boxes.append(Box(uid, uid, depth, row, task=tasks.get(uid, ""), map=uid in maps))
            for m in members:
                box_of[m] = uid
                row_of[m] = float(row)
    edges = sorted({(box_of[p], box_of[n]) for p, n in g.edges if box_of[p] != box_of[n]})
    rows = max((b.row + 1 for b in boxes), default=0)
    return Layout(boxes, edges, box_of, len(generations), rows)


def _natural(name: str) -> tuple[str, int]:
    m = re.search(r"(\d+)$", name)
    return (name[: m.start()], int(m.group(1))) if m else (name, -1)
