"""C5 from the command line: the embedded state survives between invocations; --dry-run explains a miss."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.integration.test_cli import chordflow

PIPELINE = """
[pipeline]
name = "{name}"

[tasks.load]
uses = "tests.cache_tasks.step"
params = {{ log = "{log}", value = 1, data = "{data}" }}

[tasks.double]
uses = "tests.cache_tasks.step"
depends_on = ["load"]
params = {{ log = "{log}", value = 2 }}
"""


def pipeline_file(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    log, data = tmp_path / "executions.log", tmp_path / "input.csv"
    log.write_text("")
    data.write_text("one\n")
    path = tmp_path / f"{name}.toml"
    path.write_text(PIPELINE.format(name=name, log=log, data=data))
    return path, log, data


def test_embedded_state_survives_between_invocations(tmp_path: Path) -> None:
    """No CHORDFLOW_REDIS_URL: a run, then a second (all cached), then `status` of the first."""
    path, log, _ = pipeline_file(tmp_path, "embedded_cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORDFLOW_")}
    env.update(
        CHORDFLOW_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        CHORDFLOW_STATE_DIR=str(tmp_path / "state"),
        CHORDFLOW_TASK_MODULES="tests.cache_tasks",
        CHORDFLOW_ALLOWED_TASK_PREFIXES="tests.",
        CHORDFLOW_PROJECT_DIR=str(Path(__file__).resolve().parents[2]),  # the embedded workers import tests.*
        C_FORCE_ROOT="1",
        COLUMNS="200",
    )
    first = chordflow("run", str(path), "--no-progress", env=env, timeout=180)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run_id = re.search(r"run (\S+) of pipeline", first.stdout).group(1)
    assert log.read_text().split() == ["load", "double"]
    second = chordflow("run", str(path), "--no-progress", env=env, timeout=180)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert log.read_text().split() == ["load", "double"]  # nothing ran again
    assert "cached" in second.stdout
    status = chordflow("status", run_id, env=env, timeout=60)
    assert status.returncode == 0, status.stderr
    assert run_id in status.stdout and "succeeded" in status.stdout
    manifest = tmp_path / "artifacts" / "embedded_cache" / "runs" / run_id / "manifest.json"
    assert manifest.exists()
    assert not (tmp_path / "state" / "server.json").exists()  # the last user stopped the server


@pytest.mark.usefixtures("worker")
def test_dry_run_explains_a_miss(cli_env: dict[str, str], tmp_path: Path) -> None:
    path, log, data = pipeline_file(tmp_path, "dry_cache")
    env = {**cli_env, "CHORDFLOW_USE_CACHE": "true", "COLUMNS": "250"}
    proc = chordflow("run", str(path), "--no-progress", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = re.search(r"run (\S+) of pipeline", proc.stdout).group(1)
    dry = chordflow("run", str(path), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"cached (from run {run_id}, fingerprint" in dry.stdout
    assert "0 would run, 2 cached" in dry.stdout
    data.write_text("two\n")
    dry = chordflow("run", str(path), "--dry-run", "--param", "double.value=3", env=env)
    assert f"input file '{data}' changed" in dry.stdout, dry.stdout
    assert "param 'value' changed (2 -> 3)" in dry.stdout and "upstream 'load' changed" in dry.stdout
    data.write_text("one\n")
    dry = chordflow("run", str(path), "--dry-run", "--force-task", "double", env=env)
    assert "forced" in dry.stdout and "1 would run, 1 cached" in dry.stdout
    assert log.read_text().split() == ["load", "double"]  # dry runs run nothing
