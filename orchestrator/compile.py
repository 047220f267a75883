"""Compile an :class:`ExecutionPlan` into what the ledger dispatches.

Two products, both stored once per run:

* a *node record* per node (JSON): task name, queue, parents, children,
  trigger rule, params, and for a segment head with followers the rest of its
  Celery chain (thin immutable ``.si(run_id, node)`` signatures);
* a *message template* per task: a complete kombu/Redis envelope of a Celery
  protocol-2 message, built by Celery itself (``app.amqp.as_task_v2``), with
  placeholders ``@@ID@@``, ``@@RUN@@``, ``@@NODE@@`` and ``@@BODY@@`` (where the
  body's JSON string goes, quotes included) that ``ledger.lua`` fills in, in one
  ``string.gsub`` pass, when it LPUSHes a ready node.

Messages therefore carry ids only: their size does not depend on the DAG.
The body is left without ``body_encoding`` (plain JSON, no base64) so a Lua
script can write it; kombu treats that as an unencoded body.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Celery

from orchestrator.plan import ExecutionPlan, NodePlan

BODY = "@@BODY@@"
TASK_ID = "@@ID@@"
RUN = "@@RUN@@"
NODE = "@@NODE@@"


def message_template(app: Celery, node: NodePlan) -> str:
    """The envelope of a message running ``node.task`` on ``node.queue`` (placeholders left in)."""
    msg = app.amqp.as_task_v2(
        TASK_ID,
        node.task,
        args=(RUN, NODE),
        kwargs={},
        time_limit=node.hard_timeout_s,
        soft_time_limit=node.soft_timeout_s,
        root_id=TASK_ID,
        ignore_result=True,
        argsrepr=f"('{RUN}', '{NODE}')",
        kwargsrepr="{}",
    )
    envelope = {
        "body": BODY,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": msg.headers,
        "properties": {
            **msg.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": node.queue},
            "priority": 0,
            "delivery_tag": TASK_ID,
        },
    }
    # The body placeholder stands for a whole JSON string, quotes included.
    return json.dumps(envelope, separators=(",", ":")).replace(f'"{BODY}"', BODY)


def chain_tail(app: Celery, run_id: str, plan: ExecutionPlan, node: str) -> str | None:
    """JSON of the Celery ``chain`` field for ``node``: its followers in its segment, last first.

    Every member with followers gets one, not only the head: if the ledger ever has to dispatch
    a member itself (its attempt was lost with its worker), the rest of the chain goes with it.
    """
    seg = plan.segments[plan.nodes[node].segment]
    followers = seg.nodes[seg.nodes.index(node) + 1 :]
    if not followers:
        return None
    sigs = []
    for name in reversed(followers):
        n = plan.nodes[name]
        sig = app.signature(
            n.task,
            args=(run_id, name),
            immutable=True,
            options={"queue": n.queue, "soft_time_limit": n.soft_timeout_s, "time_limit": n.hard_timeout_s},
        )
        sigs.append(dict(sig))
    return json.dumps(sigs, separators=(",", ":"))


def node_records(
    app: Celery, run_id: str, plan: ExecutionPlan, extra: dict[str, dict[str, Any]] | None = None
) -> dict[str, str]:
    """The static record of every node, as stored in the run's ``nodes`` hash (``extra``: per-node fields,
    e.g. the fingerprint and its parts, see ``orchestrator/fingerprint.py``)."""
    records = {}
    for name in plan.order:
        n = plan.nodes[name]
        rec: dict[str, Any] = {
            "pipeline": plan.pipeline,  # artifacts go under <root>/<pipeline>/ (by-name submits too)
            "task": n.task,
            "ver": n.version,
            "q": n.queue,
            "up": list(n.parents),
            "down": list(n.children),
            "rule": n.trigger_rule,
            "params": n.params,
            "via": "chain" if n.via_chain else "ledger",
        }
        if n.map is not None:
            rec["map"] = n.map
        feeds = [c for c in n.children if plan.nodes[c].map is not None and plan.nodes[c].map["over"] == name]
        if feeds:  # its result is split into the chunks of these maps (by the worker, see workers/runner.py)
            rec["feeds"] = {c: plan.nodes[c].map["batch_size"] for c in feeds if not plan.nodes[c].map["stream"]}
            rec["streams"] = [c for c in feeds if plan.nodes[c].map["stream"]]
        mapped_up = [p for p in n.parents if plan.nodes[p].map is not None and not (n.map and n.map["over"] == p)]
        if mapped_up:
            rec["mapped_up"] = mapped_up  # parents whose results arrive as MapResults
        if extra and name in extra:
            rec.update(extra[name])
        tail = chain_tail(app, run_id, plan, name)
        if tail is not None:
            rec["chain"] = tail
        records[name] = json.dumps(rec, separators=(",", ":"))
    return records


def templates(app: Celery, plan: ExecutionPlan) -> dict[str, str]:
    """One message template per task name used by the plan."""
    out: dict[str, str] = {}
    for n in plan.nodes.values():
        if n.task not in out:
            out[n.task] = message_template(app, n)
    return out
