"""``chordflow serve``: the HTTP API under uvicorn, against the shared Redis or an embedded stack.

Embedded mode (no ``CHORDFLOW_REDIS_URL``) starts a private Redis and local workers like
``chordflow run``, publishes the example pipelines (so ``etl`` can be submitted by name), and,
on a loopback address with no token configured, generates a random API token and prints it
once, with the example web app's address.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from orchestrator.api.auth import Tokens
from orchestrator.errors import ChordflowError
from orchestrator.registry import pipeline_files
from orchestrator.settings import Settings
from orchestrator.trust import project_dir

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def example_pipelines() -> list[Path]:
    """The pipeline files shipped in the ``tasks`` package (the ETL example)."""
    try:
        root = Path(str(resources.files("tasks")))
    except ModuleNotFoundError:
        return []
    return sorted(root.glob("**/pipeline.toml"))


@contextlib.contextmanager
def _backend(settings: Settings, console: Any) -> Iterator[Settings]:
    if not settings.embedded:
        yield settings
        return
    from orchestrator.client import Client
    from orchestrator.embedded import EmbeddedStack

    console.print("[dim]no CHORDFLOW_REDIS_URL: starting a private Redis and local workers[/dim]")
    with EmbeddedStack(settings) as stack:
        embedded = settings.model_copy(update={"redis_url": SecretStr(stack.url)})
        client = Client(embedded)
        base = project_dir()
        files = example_pipelines() + (pipeline_files(settings.publish_pipelines, base) if base else [])
        for path in files:
            pub, _ = client.publish(str(path))
            console.print(f"published pipeline '{pub.name}' ({len(pub.plan.order)} tasks)", highlight=False)
        yield embedded


def serve(settings: Settings, host: str, port: int, console: Any) -> int:
    """Run the API until interrupted; 0 on a clean stop."""
    import uvicorn

    from orchestrator.api.app import create_app

    generated = None
    tokens = Tokens.from_settings(settings)
    if not tokens.by_client:
        if settings.embedded and host in LOOPBACK:
            generated = secrets.token_urlsafe(24)
            tokens = Tokens.from_settings(settings, generated)
        elif settings.embedded:
            raise ChordflowError(
                f"serving on {host} (not loopback) needs CHORDFLOW_API_TOKEN or CHORDFLOW_API_TOKENS"
            )
        else:
            console.print("[yellow]warning[/yellow]: no API token configured: submit, cancel and retry are refused")
    with _backend(settings, console) as effective:
        app = create_app(effective, tokens)
        shown = f"[{host}]" if ":" in host else host
        console.print(f"chordflow API on http://{shown}:{port}  (OpenAPI: http://{shown}:{port}/docs)",
                      highlight=False, soft_wrap=True)  # fmt: skip
        console.print(f"dashboard: http://{shown}:{port}/dashboard", highlight=False, soft_wrap=True)
        if generated:
            console.print(f"API token (shown once): {generated}", highlight=False, soft_wrap=True)
            console.print(f"open http://{shown}:{port}/example#token={generated}", highlight=False, soft_wrap=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
