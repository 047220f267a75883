"""Tasks for the secret-masking and big-input tests (tests/integration/test_secrets.py).

They run on their own queue, consumed only by the worker that test starts (events on, DEBUG logs).
"""

from __future__ import annotations

from pydantic import BaseModel, SecretBytes, SecretStr

from orchestrator import RetryPolicy, TaskContext, task

QUEUE = "secrets"


class Inner(BaseModel):
    value: SecretStr  #: a secret under a neutral name, two levels down


class Holder(BaseModel):
    inner: Inner
    many: list[Inner] = []
    by_name: dict[str, SecretStr] = {}


class CanaryConfig(BaseModel):
    api_key: SecretStr
    nested: Holder
    blob: SecretBytes
    log_value: SecretStr  #: only ever passed to ctx.log by the task (as a plain string)
    retry_value: SecretStr  #: only in the first attempt's exception message
    url_a: str = ""  #: redis://:pw@h
    url_b: str = ""  #: redis://pw@h
    url_c: str = ""  #: redis://u:p w@h
    url_d: str = ""  #: redis://u:a/b@h
    fail_always: bool = True


def _everything(config: CanaryConfig) -> str:
    return " ".join(
        [
            config.api_key.get_secret_value(),
            config.nested.inner.value.get_secret_value(),
            *(i.value.get_secret_value() for i in config.nested.many),
            *(v.get_secret_value() for v in config.nested.by_name.values()),
            config.blob.get_secret_value().decode(),
            repr(config.blob.get_secret_value()),
            config.url_a,
            config.url_b,
            config.url_c,
            config.url_d,
        ]
    )


@task(name="tests.secrets.canary", queue=QUEUE, retry=RetryPolicy(attempts=2, backoff_s=0.05, jitter_s=0))
def canary(config: CanaryConfig, ctx: TaskContext) -> dict[str, bool]:
    """Logs its secrets at every level; fails once with all of them, then fails again or succeeds."""
    log = ctx.log
    log.debug("canary.debug", value=config.log_value.get_secret_value(), key=config.api_key, url=config.url_a)
    log.info("canary.info", value=config.log_value.get_secret_value(), blob=config.blob, nested=config.nested)
    log.warning("canary.warning", detail={"deep": [config.log_value.get_secret_value()]}, urls=[config.url_c])
    log.error(f"canary.error {config.log_value.get_secret_value()} {config.url_d}", api_key="x" * 8)
    try:
        raise KeyError(config.log_value.get_secret_value())
    except KeyError:
        log.exception("canary.exception", password=config.url_b)
    if ctx.attempt == 1:
        raise ValueError(f"first attempt: {config.retry_value.get_secret_value()} {_everything(config)}")
    if config.fail_always:
        raise RuntimeError(f"second attempt: {_everything(config)}")
    return {"ok": True}


class BigConfig(BaseModel):
    blob: str
    fail_message_chars: int = 0


@task(name="tests.secrets.big", queue=QUEUE)
def big(config: BigConfig, ctx: TaskContext) -> None:
    """A no-op on a huge param; optionally fails with a huge message (both pass through redaction)."""
    ctx.log.info("big.start", size=len(config.blob), head=config.blob[:100])
    if config.fail_message_chars:
        half = config.fail_message_chars // 2
        raise ValueError("x" * half + ("a://b:" + "x" * 7) * (half // 13))
