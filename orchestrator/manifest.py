"""The run-level manifest: ``<artifact_root>/<pipeline>/runs/<run_id>/manifest.json``.

One file per finished run listing every node's state, attempts, fingerprint and artifact
directory (for a ``cached`` node: the directory of the run whose result it reuses). Written by
the client that watched the run end (``chordflow run``/``retry``, or :meth:`Client.write_manifest`),
from the ledger's state, so it is the same whoever writes it, and rewriting it is harmless.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from orchestrator.artifacts import manifest_path, task_dir, write_json
from orchestrator.keys import run_keys
from orchestrator.store import RunSnapshot

CACHED_FROM = "cache of "


def build(snap: RunSnapshot, records: dict[str, str], root: Path) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    pipeline = snap.meta.get("pipeline", "default")
    for name, raw in records.items():
        rec = json.loads(raw)
        state = snap.states.get(name, "pending")
        host = snap.hosts.get(name) or ""
        source = host[len(CACHED_FROM) :] if state == "cached" and host.startswith(CACHED_FROM) else None
        owner = source or (snap.run_id if state == "succeeded" else None)
        nodes[name] = {
            "state": state,
            "attempts": int(snap.attempts.get(name, 0)),
            "fingerprint": rec.get("fp"),
            "cached_from_run": source,
            "artifacts": str(task_dir(root, pipeline, name, rec.get("ver", "1"), owner)) if owner else None,
        }
    return {"run_id": snap.run_id, "pipeline": pipeline, "state": snap.state,
            "created_at": snap.meta.get("created_at"), "finished_at": snap.meta.get("finished_at"),
            "nodes": nodes}  # fmt: skip


def write(r: redis.Redis, snap: RunSnapshot, root: Path) -> Path:
    """Write the manifest of a finished run; returns its path."""
    records = r.hgetall(run_keys(snap.run_id).nodes)
    manifest = build(snap, records, root)
    path = manifest_path(root, manifest["pipeline"], snap.run_id)
    write_json(path, manifest)
    return path
