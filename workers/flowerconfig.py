"""Flower configuration file (``celery flower --conf=workers/flowerconfig.py``): auth on every endpoint.

Flower 2.2 serves ``/metrics`` and ``/healthcheck`` without checking its own
basic auth / OAuth, so anyone on the network could read task names, worker
names and counts. Flower executes this file at start (tornado config files
are Python); it wraps both handlers in the same ``authenticated`` check as
every other page. Prometheus scrapes ``/metrics`` with the same basic auth.
"""

from flower.views import monitor as _monitor
from tornado import web as _web

for _handler in (_monitor.Metrics, _monitor.Healthcheck):
    if not getattr(_handler.get, "__chordflow_auth__", False):
        _handler.get = _web.authenticated(_handler.get)
        _handler.get.__chordflow_auth__ = True
