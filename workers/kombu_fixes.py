"""A workaround for a kombu 5.7 bug that kills a worker when Redis restarts.

When the broker connection drops, Celery closes the old connection; the Redis
channel then tries to restore or ack this worker's unacked messages through a
connection that is already released, and ``Channel._connparams`` fails with
``AttributeError: 'NoneType' object has no attribute 'hostname'`` (or
``'client'``). Celery treats an AttributeError as unrecoverable and the worker
shuts down instead of reconnecting (the family of celery#8030, celery#10205,
kombu#970). We raise redis' ``ConnectionError`` instead, which Celery and
kombu already handle as "connection lost": the worker reconnects, and the
unacked messages come back through the visibility-timeout restore, where
chordflow's leases make their redelivery harmless.
"""

from __future__ import annotations

from typing import Any

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    import redis.exceptions
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or getattr(self.connection, "client", None) is None:
            raise redis.exceptions.ConnectionError("broker connection already released (Redis went away)")
        return original(self, asynchronous=asynchronous)

    kombu_redis.Channel._connparams = _connparams
    _applied = True
