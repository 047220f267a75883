"""README's five-minute tour, run exactly as written: a README sentence that is not true is a bug.

The tour's code blocks are taken from README.md (files by their ``# tasks/shop/...`` first line,
commands from the ``bash`` blocks) and run in a temp copy of the layout: its own ``tasks``
package, a dedicated worker importing it (cwd and PYTHONPATH there) on its own queue, against
the session Redis. The installed ``chordflow`` command is used, as a user would.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.embedded import RedisServer, WorkerProcess
from tests.conftest import REPO

README = REPO / "README.md"
QUEUE = "readme-tour"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def tour_blocks() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Five-minute tour")
    end = text.index("\n## ", start + 1)
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text[start:end])]


def tour_files() -> dict[str, str]:
    """``{relative path: content}`` of the blocks that open with a ``# tasks/...`` file-name comment."""
    files = {}
    for _lang, code in tour_blocks():
        first = code.splitlines()[0]
        if re.fullmatch(r"# tasks/\S+", first):
            files[first[2:]] = code
    return files


def tour_commands() -> list[str]:
    return [line for lang, code in tour_blocks() if lang == "bash" for line in code.splitlines() if line.strip()]


def tour_pipeline_snippet() -> str:
    (code,) = [c for lang, c in tour_blocks() if lang == "python" and c.startswith("from orchestrator import Pipeline")]
    return code


def test_tour_is_found_in_the_readme() -> None:
    assert set(tour_files()) == {"tasks/shop/steps.py", "tasks/shop/pipeline.toml"}
    commands = tour_commands()
    assert commands[0].startswith("mkdir -p tasks/shop && touch tasks/shop/__init__.py")
    assert [c.split("#")[0].strip() for c in commands[1:]] == [
        "chordflow validate tasks/shop/pipeline.toml",
        "chordflow run tasks/shop/pipeline.toml --dry-run",
        "chordflow run tasks/shop/pipeline.toml --param fetch.pages=50",
    ]


@pytest.fixture
def tour_dir(tmp_path: Path) -> Path:
    """A checkout-like layout: the repo's ``tasks/__init__.py`` and the tour's files, nothing else."""
    (tmp_path / "tasks").mkdir()
    shutil.copy(REPO / "tasks" / "__init__.py", tmp_path / "tasks" / "__init__.py")
    for rel, code in tour_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(code, encoding="utf-8")
    return tmp_path


def test_the_tour_runs_as_written(tour_dir: Path, redis_server: RedisServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORDFLOW_")}
    env.update(
        CHORDFLOW_REDIS_URL=redis_server.url,
        CHORDFLOW_DEFAULT_QUEUE=QUEUE,
        PYTHONPATH=str(tour_dir),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        C_FORCE_ROOT="1",
        COLUMNS="250",  # rich wraps at 80 columns when not a terminal
    )

    def sh(command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=tour_dir, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert proc.returncode == 0, f"$ {command}\n{proc.stdout}\n{proc.stderr}"
        return proc

    setup, *commands = tour_commands()
    sh(setup)  # before the worker starts: it imports the task packages once, at start
    worker = WorkerProcess(
        redis_server.url, "readme-tour@%h", concurrency=1, queues=[QUEUE], log_path=tour_dir / "worker.log",
        extra_env={k: v for k, v in env.items() if k.startswith("CHORDFLOW_")}, cwd=tour_dir,
    ).start()  # fmt: skip
    try:
        validate, dry_run, run = (sh(c) for c in commands)
        assert "tasks/shop/pipeline.toml: ok (2 tasks)" in validate.stdout
        assert "nothing was dispatched" in dry_run.stdout
        assert re.search(r"run \S+ succeeded", run.stdout), run.stdout
        (pages,) = (tour_dir / "artifacts" / "shop" / "fetch" / "v2").glob("*/pages.jsonl")  # relative artifact root
        assert len(pages.read_text().splitlines()) == 50  # --param fetch.pages=50 reached the task
        assert "fetch" in run.stdout and "summarise" in run.stdout

        check = (
            tour_pipeline_snippet() + "\nfrom orchestrator.validate import validate\nassert validate(pipeline) == []\n"
        )
        sh(f"python -c {shlex.quote(check)}")
    except BaseException:
        log = (tour_dir / "worker.log").read_text() if (tour_dir / "worker.log").exists() else ""
        print(f"tour worker log:\n{log[-3000:]}")
        raise
    finally:
        worker.stop()
