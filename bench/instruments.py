"""Instruments of ``make bench``: a Redis MONITOR reader, a queue-length sampler, the round-trip floor.

Split out of :mod:`bench.common` (which re-exports them) so each module keeps to one concern.
"""

from __future__ import annotations

import codecs
import socket
import statistics
import threading
import time
from collections import Counter

import psutil
import redis

CF_QUEUE = "chordflow"  # = bench.common.CF_QUEUE
RAW_QUEUE = "raw"  # = bench.common.RAW_QUEUE


class Monitor:
    """Reads Redis MONITOR in a thread and keeps per-command counts and LPUSH value sizes.

    Each line is classified by origin: ``lua`` (a command run inside a script) or the TCP port
    of the client that sent it (mapped to a process afterwards with :func:`port_owners`).
    LPUSH sizes are the exact byte length of the pushed value (MONITOR's escaping undone).
    """

    def __init__(self, r: redis.Redis, lpush_keys: tuple[str, ...] = (CF_QUEUE, RAW_QUEUE), window_s: float = 0):
        self.pool_kwargs = r.connection_pool.connection_kwargs
        self.lpush_keys = {k.encode() for k in lpush_keys}
        self.window_s = window_s  #: stop recording after this many seconds (0 = until stop())
        self.counts: Counter[tuple[str, str]] = Counter()  #: (origin, COMMAND) -> n
        self.round_trips: Counter[str] = Counter()  #: origin -> requests (a MULTI..EXEC block counts once)
        self._in_multi: set[str] = set()
        self.lpush_sizes: list[int] = []
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()

    def start(self) -> Monitor:
        self.thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def _run(self) -> None:
        kw = {k: v for k, v in self.pool_kwargs.items() if k in ("host", "port", "password", "db")}
        conn = redis.Connection(**kw)
        try:
            conn.send_command("MONITOR")
            conn.read_response()
            self._ready.set()
            t_end = time.monotonic() + self.window_s if self.window_s else None
            while not self.stop_event.is_set():
                line = conn.read_response()
                if t_end is not None and time.monotonic() > t_end:
                    break
                if isinstance(line, str):
                    line = line.encode()
                self._parse(line)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
            self._ready.set()
        finally:
            conn.disconnect()

    def _parse(self, line: bytes) -> None:
        # 1700000000.123456 [0 127.0.0.1:40000] "LPUSH" "queue" "value"
        lb = line.find(b"[")
        rb = line.find(b"]", lb)
        if lb < 0 or rb < 0:
            return
        client = line[lb + 1 : rb].split(b" ", 1)[-1]
        origin = "lua" if client == b"lua" else client.rsplit(b":", 1)[-1].decode()
        rest = line[rb + 2 :]
        q = rest.find(b'"', 1)
        cmd = rest[1:q].decode(errors="replace").upper()
        self.counts[(origin, cmd)] += 1
        if origin != "lua":
            if cmd == "MULTI":
                self._in_multi.add(origin)
                self.round_trips[origin] += 1
            elif cmd in ("EXEC", "DISCARD"):
                self._in_multi.discard(origin)
            elif origin not in self._in_multi:
                self.round_trips[origin] += 1
        if cmd in ("LPUSH", "RPUSH"):
            args = rest[q + 2 :]
            q2 = args.find(b'"', 1)
            key = args[1:q2]
            if key in self.lpush_keys:
                value = args[q2 + 3 : -1]  # skip '" "' ... strip the closing quote
                self.lpush_sizes.append(len(codecs.escape_decode(value)[0]))

    def stop(self, wake: redis.Redis) -> Monitor:
        self.stop_event.set()
        try:
            wake.ping()
        except redis.RedisError:
            pass
        if self.thread is not None:
            self.thread.join(30)
        if self.error is not None and not isinstance(self.error, redis.ConnectionError):
            raise RuntimeError(f"MONITOR reader failed: {self.error!r}")
        return self


def port_owners(redis_port: int, roles: dict[str, list[int]]) -> dict[str, str]:
    """Local TCP port -> role ("driver", "worker") for every open connection to Redis."""
    out: dict[str, str] = {}
    for role, pids in roles.items():
        for pid in pids:
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for c in conns:
                if c.raddr and c.raddr.port == redis_port and c.laddr:
                    out[str(c.laddr.port)] = role
    return out


class QueueSampler:
    """Light-weight message-size sampling for runs too big for MONITOR.

    Every ``interval_s`` it reads the newest and oldest ``k`` messages of the queue with LRANGE and
    keeps the largest byte length seen (plus how many messages it looked at).
    """

    def __init__(self, r: redis.Redis, queue: str, interval_s: float = 0.2, k: int = 10) -> None:
        self.r, self.queue, self.interval_s, self.k = r, queue, interval_s, k
        self.largest = 0
        self.sampled = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> QueueSampler:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                pipe = self.r.pipeline(transaction=False)
                pipe.lrange(self.queue, 0, self.k - 1)
                pipe.lrange(self.queue, -self.k, -1)
                for msgs in pipe.execute():
                    for m in msgs:
                        self.sampled += 1
                        self.largest = max(self.largest, len(m))
            except redis.RedisError:
                pass

    def stop(self) -> QueueSampler:
        self.stop_event.set()
        self.thread.join(5)
        return self


def round_trip_floor(r: redis.Redis, n: int = 2000) -> dict[str, float]:
    """Unpipelined vs pipelined round trips to the bench Redis from this process (redis-py + hiredis)."""
    key = "bench:rtt"
    r.delete(key)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        r.incr(key)
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    batches = n // 100
    for _ in range(batches):
        pipe = r.pipeline(transaction=False)
        for _ in range(100):
            pipe.incr(key)
        pipe.execute()
    piped = (time.perf_counter() - t0) / (batches * 100)
    # a bare socket PING (no client library on the path)
    s = socket.create_connection(("127.0.0.1", r.connection_pool.connection_kwargs["port"]))
    pw = r.connection_pool.connection_kwargs.get("password")
    if pw:
        s.sendall(f"AUTH {pw}\r\n".encode())
        s.recv(64)
    raw = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(b"PING\r\n")
        s.recv(64)
        raw.append(time.perf_counter() - t0)
    s.close()
    r.delete(key)
    return {
        "unpipelined_us_median": statistics.median(lat) * 1e6,
        "pipelined_us_per_op": piped * 1e6,
        "socket_ping_us_median": statistics.median(raw) * 1e6,
    }
