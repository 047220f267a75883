"""The dashboard's DAG layout (pure): longest-path layers, groups for big runs, cheap at 1,000 tasks."""

from __future__ import annotations

import time
from importlib import resources

from orchestrator.layout import layout, prefix


def test_layers_follow_the_longest_path_not_the_shortest() -> None:
    # a -> b -> c, and a -> c: c is in layer 2 (after b), not layer 1
    lay = layout({"a": [], "b": ["a"], "c": ["a", "b"]})
    layer = {b.id: b.layer for b in lay.boxes}
    assert layer == {"a": 0, "b": 1, "c": 2}
    assert set(lay.edges) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert lay.layers == 3 and lay.rows == 1


def test_small_runs_are_never_grouped() -> None:
    lay = layout({f"n{i}": [] for i in range(10)})
    assert all(not b.members for b in lay.boxes) and len(lay.boxes) == 10


def test_a_1000_task_run_collapses_same_prefix_siblings_and_is_fast() -> None:
    parents = {}
    for k in range(10):
        for j in range(100):
            parents[f"n{k}_{j}"] = [] if k == 0 else [f"n{k - 1}_{j}", f"n{k - 1}_{(j + 7) % 100}"]
    parents["report"] = [f"n9_{j}" for j in range(100)]
    started = time.perf_counter()
    lay = layout(parents, maps=set())
    assert time.perf_counter() - started < 2.0
    groups = [b for b in lay.boxes if b.members]
    assert len(groups) == 10 and all(len(g.members) == 100 for g in groups)
    assert groups[0].members[:3] == ["n0_0", "n0_1", "n0_2"]  # natural order
    assert lay.box_of["n3_17"] == "group:3:n3" and lay.box_of["report"] == "report"
    assert ("group:9:n9", "report") in lay.edges and len(lay.edges) == 10  # 9 between layers + the report
    assert len(lay.boxes) == 11


def test_map_nodes_are_never_grouped_and_names_without_a_number_stay_alone() -> None:
    assert prefix("shard-12") == "shard" and prefix("n3_17") == "n3" and prefix("clean") is None
    parents = {f"m{i}": [] for i in range(50)}
    lay = layout(parents, maps={f"m{i}" for i in range(50)})
    assert not any(b.members for b in lay.boxes)


def test_the_dashboard_files_ship_inside_the_package() -> None:
    root = resources.files("orchestrator").joinpath("dashboard")
    for name in ("index.html", "app.js", "style.css"):
        text = root.joinpath(name).read_text(encoding="utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text  # no CDN
