"""``GET /metrics``: Prometheus text exposition of chordflow's cluster-wide counters.

The counters are kept in Redis as things happen (:mod:`orchestrator.metrics`); a scrape reads a fixed
number of keys, so it costs the same with 10 or 10,000 runs in history. Same access rule as every other
read of the API (open unless ``api_open_reads=false``, then a bearer token).
"""

from __future__ import annotations

import asyncio

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from orchestrator import metrics
from orchestrator.api import auth


def add_metrics_route(app: FastAPI) -> None:
    @app.get("/metrics", tags=["ops"], dependencies=[Depends(auth.read)], response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics: runs, task durations, retries, lost attempts, time limits, queues, in flight,
        ledger call latency, alerts (README "Metrics")."""
        c = request.app.state.client
        body = await asyncio.to_thread(metrics.exposition, c.client.store.r, c.settings)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
