"""Two patches of kombu 5.7's Redis transport, applied in the worker.

1. A workaround for a kombu 5.7 bug that kills a worker when Redis restarts.

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

2. Speed: ``Channel.conn_or_acquire()`` builds a new ``redis.Redis`` around the channel's connection pool for
every ack, every message registered as unacked and every publish (a chain's next hop), and a redis-py 8
client copies a ~170-entry case-insensitive callback table when it is built: ~100 µs each on a 2-vCPU box,
two or three times per task (see shared PERF-BASELINE, "the client publish path is heavy"). The channel
keeps one client per pool instead (a ``redis.Redis`` is safe to share: it checks a connection out of the
pool per command, and the pool itself handles forks); a new pool (a reconnect) gets a new client.
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

    create_client = kombu_redis.Channel._create_client

    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return create_client(self, asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get("_chordflow_client")
        if cached is not None and cached[0] is pool:
            return cached[1]
        client = create_client(self, asynchronous=False)
        self.__dict__["_chordflow_client"] = (pool, client)
        return client

    kombu_redis.Channel._create_client = _create_client
    _applied = True
