"""Bad input (RELIABILITY #18-20, #25-27): a clear error, nothing changed in Redis or on disk, no import."""

from __future__ import annotations

import base64
import json
import os
import pickle
import time
import uuid
from pathlib import Path

import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.errors import RunNotFound
from orchestrator.keys import run_keys
from tests.conftest import run_to_end
from tests.fault_report import record
from tests.integration.test_cli import chordflow, keyspace
from tests.integration.test_engine import _create_undispatched
from tests.pipelines import echo, noop, stamp


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("syntax.toml", '[pipeline]\nname = "x"\n[tasks.a\nuses = "tasks.x"\n', "invalid TOML: Expected ']'"),
        ("syntax2.toml", '[pipeline]\nname = "x"\n\n[tasks.a]\nuses = tasks.x\n', "(at line 5, column 8)"),
        ("empty.toml", "", "field 'pipeline': Field required"),
        ("wrong_type.toml", 'tasks = 5\n[pipeline]\nname = "x"\n', "field 'tasks': Input should be a valid dictionary"),
        ("tabs.yaml", "pipeline:\n\tname: x\n", "unsupported pipeline file type '.yaml' (use .toml)"),
        ("self_loop.toml", '[pipeline]\nname = "x"\n[tasks.a]\nuses = "tests.pipelines.add"\ndepends_on = ["a"]\n',
         "task 'a': depends on itself"),
        ("traversal.toml", '[pipeline]\nname = "x"\n[tasks."../t"]\nuses = "tests.pipelines.noop"\n',
         "task '../t': task name must match"),
        ("colon.toml", '[pipeline]\nname = "x"\n[tasks.a]\nuses = "tasks.evil:fn"\n',
         "task 'a': field 'uses': module 'tasks' has no attribute 'evil:fn'"),
    ],
)  # fmt: skip
def test_18_19_malformed_files_exit_2_naming_the_file(
    name: str, text: str, message: str, tmp_path: Path, cli_env: dict[str, str], redis_client: redis.Redis
) -> None:
    path = tmp_path / name
    path.write_text(text)
    before = keyspace(redis_client)
    for command in ("validate", "run"):
        proc = chordflow(command, str(path), env=cli_env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert str(path) in proc.stderr and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert keyspace(redis_client) == before
    record({"scenario": f"18-19 bad pipeline file ({name})", "exit_code": proc.returncode,
            "path_named": str(path) in proc.stderr, "keyspace_changed": keyspace(redis_client) != before})  # fmt: skip


def test_20_disallowed_module_is_never_imported(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A module outside the allowed prefixes, importable and with an import-time side effect, stays unimported."""
    canary = tmp_path / "canary"
    (tmp_path / "evilmod.py").write_text(f"open({str(canary)!r}, 'w').write('imported')\ndef fn(): pass\n")
    pipeline = tmp_path / "evil.toml"
    pipeline.write_text('[pipeline]\nname = "evil"\n[tasks.a]\nuses = "evilmod.fn"\n[tasks.b]\nuses = "os.system"\n')
    env = {**cli_env, "PYTHONPATH": f"{cli_env['PYTHONPATH']}{os.pathsep}{tmp_path}"}
    proc = chordflow("validate", str(pipeline), env=env)
    assert proc.returncode == 2
    assert "task 'a': field 'uses': 'evilmod.fn' is outside the allowed task packages" in proc.stderr
    assert "task 'b': field 'uses': 'os.system' is outside the allowed task packages" in proc.stderr
    assert not canary.exists()
    record({"scenario": "20 disallowed task references", "errors": proc.stderr.count("outside the allowed"),
            "cases": 2, "canary_files": int(canary.exists())})  # fmt: skip


@pytest.mark.usefixtures("worker")
def test_25_pickle_payload_with_side_effect_never_unpickled(
    client: Client, redis_client: redis.Redis, tmp_path: Path
) -> None:
    canary = tmp_path / "pickle-canary"

    class Bomb:
        def __reduce__(self):  # unpickling this would create the canary file
            return (Path.touch, (canary,))

    run_id = _create_undispatched(client, Pipeline("pickle2").add_task(stamp, name="victim"))
    redis_client.hset(run_keys(run_id).state, "victim", "queued")
    body = pickle.dumps(((run_id, "victim"), {"bomb": Bomb()}, {}))
    task_id = f"bomb-{uuid.uuid4().hex}"
    envelope = {"body": base64.b64encode(body).decode(), "content-encoding": "binary",
                "content-type": "application/x-python-serialize",
                "headers": {"lang": "py", "task": "tests.stamp", "id": task_id, "root_id": task_id, "retries": 0,
                            "timelimit": [None, None], "argsrepr": "", "kwargsrepr": ""},
                "properties": {"correlation_id": task_id, "delivery_mode": 2, "priority": 0,
                               "delivery_info": {"exchange": "", "routing_key": "chordflow"},
                               "body_encoding": "base64", "delivery_tag": task_id}}  # fmt: skip
    redis_client.lpush("chordflow", json.dumps(envelope))
    # a JSON run behind it completes, so the bomb has been consumed (FIFO, one queue)
    assert run_to_end(client, Pipeline("after-bomb").add_task(noop)).state == "succeeded"
    deadline = time.monotonic() + 10
    while redis_client.llen("chordflow") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not canary.exists()
    assert redis_client.hget(f"tests:executions:{run_id}", "victim") is None
    assert run_to_end(client, Pipeline("alive").add_task(noop)).state == "succeeded"  # worker still alive
    executed = int(redis_client.hget(f"tests:executions:{run_id}", "victim") or 0)
    record({"scenario": "25 pickle injection", "canary_files": int(canary.exists()), "executed": executed})


@pytest.mark.usefixtures("worker")
def test_26_code_looking_params_are_plain_data(client: Client, tmp_path: Path) -> None:
    canary = tmp_path / "eval-canary"
    bait = f"__import__('os').system('touch {canary}')"
    snap = run_to_end(client, Pipeline("bait").add_task(echo, params={"text": bait}))
    assert snap.state == "succeeded"
    assert client.results(snap.run_id)["echo"] == {"text": bait}
    assert not canary.exists()
    record({"scenario": "26 eval bait in params", "canary_files": int(canary.exists())})


def test_27_run_id_traversal_is_refused(cli_env: dict[str, str], client: Client) -> None:
    for bad in ("../../x", "/etc/passwd", "２０２６１１２４-000000-abcdef", "20261124-000000-ABCDEF"):
        proc = chordflow("status", bad, env=cli_env)
        assert proc.returncode == 2 and "is not a run id" in proc.stderr, (bad, proc.stderr)
    with pytest.raises(RunNotFound, match="is not a run id"):  # a NUL cannot even be passed on a command line
        client.status("20261124-000000-abcde\x00")


@pytest.mark.usefixtures("worker")
def test_27_artifact_symlink_escape_is_refused(client: Client, artifact_root: Path, tmp_path: Path) -> None:
    """A task's artifact directory replaced by a symlink to elsewhere: the task fails, nothing is written there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    node = f"escape_{uuid.uuid4().hex[:8]}"
    (artifact_root / "escape").mkdir(exist_ok=True)  # artifacts live under <root>/<pipeline>/<node>/
    (artifact_root / "escape" / node).symlink_to(outside, target_is_directory=True)
    before = sorted(p for p in outside.rglob("*"))
    snap = run_to_end(client, Pipeline("escape").add_task(stamp, name=node))
    assert snap.states[node] == "failed"
    assert "outside the artifact root" in json.loads(snap.errors[node])["message"]
    assert sorted(p for p in outside.rglob("*")) == before == []
    record({"scenario": "27 path traversal (run ids, node names, symlinked artifact dir)",
            "files_outside_root": len(list(outside.rglob("*")))})  # fmt: skip


@pytest.mark.usefixtures("worker")
def test_22_oversized_result_is_refused(client: Client) -> None:
    from tests.pipelines import EchoConfig  # noqa: F401  (the echo task returns its param)

    snap = run_to_end(client, Pipeline("big").add_task(echo, params={"text": "x" * 1_200_000}))
    assert snap.states["echo"] == "failed"
    assert "over max_result_bytes" in json.loads(snap.errors["echo"])["message"]
    assert client.results(snap.run_id) == {}
    stored = len(json.dumps(client.results(snap.run_id)))
    record({"scenario": "22 oversized result", "state": snap.state, "attempts": int(snap.attempts["echo"]),
            "stored_result_bytes": stored - 2})  # fmt: skip
