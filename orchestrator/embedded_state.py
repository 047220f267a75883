"""C5: the embedded Redis keeps its data in a persistent state directory, shared by concurrent CLIs.

The rule: ``<state_dir>/redis/`` holds the AOF; ``<state_dir>/server.json`` (mode 600) the port and
password of the server now running on it. Every embedded invocation

* takes ``embedded.lock`` (exclusive, short) to decide: reuse the live server named in
  ``server.json``, or start one (detached from this process: it must outlive us if another
  invocation still uses it) and write ``server.json``;
* holds a *shared* lock on ``users.lock`` for as long as it uses the server;
* on exit, under ``embedded.lock`` again, drops its shared lock and, if it can then take
  ``users.lock`` exclusively, it was the last user: it shuts the server down (SHUTDOWN: the AOF
  is flushed) and removes ``server.json``.

Two invocations therefore never start two servers on one data directory (which would corrupt
it). Locks are ``flock``: a CLI that is killed drops them, and the next invocation adopts a
server it left running (its ``server.json`` still answers), or starts a fresh one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import redis

from orchestrator.embedded import RedisServer
from orchestrator.errors import EmbeddedStartError

LOCK_WAIT_S = 60.0


class SharedRedis:
    """The state directory's Redis server, reused by every embedded invocation while one runs."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.url = ""
        self._users: IO[str] | None = None

    def __enter__(self) -> SharedRedis:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked():
            info = self._read()
            if info is None or not _alive(info):
                info = self._start()
            self._users = (self.dir / "users.lock").open("a")
            fcntl.flock(self._users, fcntl.LOCK_SH)
        self.url = f"redis://:{info['password']}@127.0.0.1:{info['port']}/0"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._users is None:
            return
        with self._locked():
            fcntl.flock(self._users, fcntl.LOCK_UN)
            try:
                fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                last = False  # another invocation still uses the server
            else:
                last = True
            if last:
                info = self._read()
                if info is not None:
                    _shutdown(info)
                (self.dir / "server.json").unlink(missing_ok=True)
            self._users.close()
            self._users = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.dir / "embedded.lock").open("a") as fh:
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedStartError(f"{self.dir}/embedded.lock is held by another chordflow") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self) -> dict[str, object] | None:
        try:
            return dict(json.loads((self.dir / "server.json").read_text()))
        except (OSError, ValueError):
            return None

    def _start(self) -> dict[str, object]:
        server = RedisServer(self.dir / "redis", password=secrets.token_urlsafe(24), detached=True).start()
        info = {"port": server.port, "password": server.password, "pid": server.proc.pid if server.proc else 0}
        path = self.dir / "server.json"
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(info))
        os.replace(path.with_suffix(".tmp"), path)
        return info


def _client(info: dict[str, object]) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=int(str(info["port"])), password=str(info["password"]),
                       socket_timeout=2, socket_connect_timeout=1)  # fmt: skip


def _alive(info: dict[str, object]) -> bool:
    try:
        return bool(_client(info).ping())
    except redis.RedisError:
        return False


def _shutdown(info: dict[str, object]) -> None:
    try:
        _client(info).shutdown()
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection: that is the success case
    except redis.RedisError:
        return
    pid = int(str(info.get("pid") or 0))
    deadline = time.monotonic() + 10
    while pid and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
