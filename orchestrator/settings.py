"""C9: configuration, in one place, with one precedence.

Precedence (highest first): arguments given in code > ``CHORDFLOW_*``
environment variables > ``config/<env>.toml`` > defaults. Secrets (the Redis
password) belong in environment variables, never in the TOML files. Which
config file is read, and what it may set, is decided by :mod:`orchestrator.trust`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from orchestrator.alerts import AlertConfig
from orchestrator.errors import ChordflowError
from orchestrator.trust import check_cwd_config, config_source, project_dir

ENVIRONMENTS = ("dev", "staging", "prod")


class _TrustedTomlSource(TomlConfigSettingsSource):
    """``config/<env>.toml``, read only as far as :mod:`orchestrator.trust` allows."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        self._source = config_source()
        super().__init__(settings_cls, toml_file=self._source.path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        if not self._source.explicit:
            check_cwd_config(Path(file_path), set())  # ownership and mode, before reading a byte
        try:
            data = super()._read_file(file_path)
        except RecursionError:
            raise ChordflowError(f"config file {file_path}: invalid TOML: nested too deeply") from None
        if not self._source.explicit:
            check_cwd_config(Path(file_path), set(data))
        return data


class Settings(BaseSettings):
    """Every tunable of chordflow; see README "Configuration"."""

    model_config = SettingsConfigDict(env_prefix="CHORDFLOW_", extra="forbid", env_nested_delimiter="__")

    env: str = Field("dev", description="environment name; selects config/<env>.toml")
    redis_url: SecretStr | None = Field(
        None, description="broker + ledger; unset = embedded mode (private Redis and local workers)"
    )
    artifact_root: Path = Field(Path("artifacts"), description="where task outputs go")
    default_queue: str = "chordflow"
    queues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["chordflow"], description="queues a worker consumes"
    )
    concurrency: int = Field(2, ge=1, le=256, description="worker processes per worker")
    embedded_workers: int = Field(1, ge=1, le=16, description="worker processes started in embedded mode")
    task_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tasks"], description="imported by every worker"
    )
    allowed_task_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tasks."], description="module paths pipeline files may import (whole components)"
    )
    allow_unauthenticated_redis: bool = Field(
        False, description="accept a Redis URL without a password (distributed mode); off: refused"
    )
    run_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="how long a run's keys live after it ends")
    max_chain: int = Field(8, ge=1, le=64, description="longest linear run compiled into one Celery chain")
    lease_s: float = Field(30.0, ge=0.3, description="an attempt's lease; renewed every lease_s/3 while it runs")
    max_worker_lost: int = Field(2, ge=0, le=100, description="requeues of a task whose worker died, then failed")
    reaper_interval_s: float = Field(10.0, ge=0.2, description="how often workers look for expired leases")
    visibility_timeout_s: int = Field(3600, ge=5, description="Redis broker redelivery of unacked messages")
    restore_interval_s: int = Field(10, ge=1, description="how often workers look for unacked messages to restore")
    prefetch_multiplier: int = Field(1, ge=1, le=64)
    max_memory_per_child_kb: int | None = Field(
        None, ge=10_000, description="recycle a pool process after a task leaves it above this RSS"
    )
    progress_interval_s: float = Field(0.5, ge=0, description="minimum time between two progress writes")
    task_events: bool = Field(True, description="send Celery task events (what Flower shows)")
    refuse_unroutable: bool = Field(
        False, description="refuse a submit when no live worker consumes a task's queue or knows the task"
    )
    max_result_bytes: int = Field(1_000_000, ge=1, description="largest result kept in Redis (UTF-8 JSON bytes)")
    max_nodes: int = Field(100_000, ge=1, description="most tasks in one pipeline (checked before validation)")
    max_fan_out: int = Field(10_000, ge=1, description="most children of one task (released in one Redis call)")
    max_param_depth: int = Field(32, ge=1, le=100, description="deepest nesting of a task's params")
    artifact_umask: str = Field(
        "077", pattern=r"^0?[0-7]{3}$", description="octal umask of workers: 077 = artifacts 0600, dirs 0700"
    )
    write_artifacts: bool = Field(True, description="write result.json/metadata.json per task")
    # run-end notifications (README "Notifications"); secrets by environment variable only
    notify_sender: bool = Field(True, description="this worker delivers run-end notifications (false: it never does)")
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key webhooks are signed with; unset: webhooks are refused (recorded failed)"
    )
    notify_timeout_s: float = Field(10.0, gt=0, le=300, description="one webhook request or SMTP session")
    notify_retry_s: float = Field(300.0, ge=0, description="a failing target is retried this long after its first try")
    notify_backoff_s: float = Field(1.0, gt=0, description="wait before the first retry; doubles, with jitter")
    notify_backoff_max_s: float = Field(60.0, gt=0, description="longest wait between two attempts")
    notify_lease_s: float = Field(
        60.0, ge=1, description="a worker's claim on a run's notifications (at least 2 x notify_timeout_s is used)"
    )
    smtp_host: str | None = Field(None, description="SMTP server for e-mail notifications; unset: e-mails fail")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_starttls: bool = Field(False, description="upgrade the SMTP connection with STARTTLS (certificate checked)")
    smtp_user: str | None = Field(None, description="SMTP login (with smtp_password); unset: no AUTH")
    smtp_password: SecretStr | None = None
    smtp_from: str = Field("chordflow@localhost", description="From: of notification e-mails")
    alerts: AlertConfig = Field(
        default_factory=AlertConfig,
        description="alert conditions and targets ([alerts] table, CHORDFLOW_ALERTS__<FIELD>); README 'Alerts'",
    )
    use_cache: bool = Field(True, description="reuse results of nodes whose fingerprint is unchanged (C5)")
    state_dir: Path | None = Field(
        None,
        description="embedded Redis data + file-hash cache; default: <project>/.chordflow "
        "(project: CHORDFLOW_PROJECT_DIR, else the working directory)",
    )
    publish_pipelines: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tasks/**/pipeline.toml"],
        description="pipeline files (globs) workers publish at start; relative to CHORDFLOW_PROJECT_DIR or the cwd",
    )
    api_token: SecretStr | None = Field(None, description="bearer token for the HTTP API's mutations")
    api_tokens: SecretStr | None = Field(None, description="more API tokens, one per client: 'client=token,...'")
    api_open_reads: bool = Field(True, description="HTTP API reads need no token; false: reads need one too")
    api_max_body_bytes: int = Field(1_000_000, ge=1, description="largest HTTP request body (413 above)")
    flower_url: str | None = Field(
        None, pattern=r"^https?://", description="Flower's base URL: the dashboard links workers and tasks into it"
    )
    sse_heartbeat_s: float = Field(15.0, gt=0, description="comment sent on a quiet event stream (proxies)")
    log_level: str = "INFO"
    log_file: Path | None = Field(None, description="JSON log file (rotated); default: stderr only")

    @field_validator("env")
    @classmethod
    def _known_env(cls, v: str) -> str:
        if v not in ENVIRONMENTS:
            raise ValueError(f"must be one of {ENVIRONMENTS}")
        return v

    @field_validator("queues", "task_modules", "allowed_task_prefixes", "publish_pipelines", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.strip().startswith("["):
                return json.loads(v)
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TrustedTomlSource(settings_cls))

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    def state_path(self) -> Path:
        """Where the embedded Redis keeps its data between invocations, and the input-file hash cache."""
        return (self.state_dir or (project_dir() or Path.cwd()) / ".chordflow").resolve()

    def redis_url_value(self) -> str:
        """The Redis URL; raises :class:`RedisUnauthenticated` if it has no password and that is not allowed."""
        if self.redis_url is None:
            raise ValueError("no Redis URL configured")
        url = self.redis_url.get_secret_value()
        if not self.allow_unauthenticated_redis and not url_has_password(url):
            raise RedisUnauthenticated(
                "the Redis URL has no password (redis://:PASSWORD@host:6379/0): anyone who reaches that Redis "
                "can read every param and result and make workers run tasks; set a password (requirepass), "
                "or CHORDFLOW_ALLOW_UNAUTHENTICATED_REDIS=true if an open Redis is intended"
            )
        return url


class RedisUnauthenticated(ChordflowError):
    """The configured Redis URL carries no password and that was not explicitly allowed."""


def url_has_password(url: str) -> bool:
    """Whether ``url`` authenticates: a password in the userinfo or a ``password=`` query parameter."""
    parts = urlsplit(url)
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        return True  # userinfo with an unencoded '/': connect() reports that it cannot be parsed, masked
    try:
        if parts.password:
            return True
    except ValueError:
        return False
    return bool(parse_qs(parts.query).get("password", [""])[0])


def load_settings(**overrides: Any) -> Settings:
    """Settings for the current ``CHORDFLOW_ENV`` with ``overrides`` on top."""
    return Settings(**overrides)
