"""Strict params as a user meets them: the CLI exits 2 naming file, task and field path; nothing
is queued; a nested --param reaches the task merged with the file's params; Client.submit refuses
params for a task the pipeline does not have."""

from __future__ import annotations

import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.errors import PipelineInvalid
from tests.conftest import REPO
from tests.integration.test_cli import chordflow, keyspace
from tests.pipelines import dbconn, number

DATA = REPO / "tests" / "data"
NESTED = str(DATA / "nested_params.toml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", NESTED, "--param", "dbconn.db.prot=1"],
            f"{NESTED}: task 'dbconn': field 'params.db.prot': unknown field (known: host, port)",
        ),
        (
            ["run", NESTED, "--param", "dbconn.lable=x"],
            f"{NESTED}: task 'dbconn': field 'params.lable': unknown field (known: by_region, db, fallback, label, "
            "replicas)",
        ),
        (
            ["run", NESTED, "--param", "dbconn.db.port=abc"],
            f"{NESTED}: task 'dbconn': field 'params.db.port': Input should be a valid integer",
        ),
        (
            ["run", NESTED, "--param", 'dbconn.replicas=[{"hots": "r"}]'],
            "field 'params.replicas.0.hots': unknown field (known: host, port)",
        ),
        (
            ["validate", str(DATA / "unknown_param.toml")],
            f"{DATA / 'unknown_param.toml'}: task 'dbconn': field 'params.db.prot': unknown field (known: host, port)",
        ),
        (["run", NESTED, "--param", "dbconn.db.port=1", "--param", "dbconn.db=2"], "already has nested --param"),
    ],
)
def test_unknown_or_bad_params_exit_2_naming_the_path(
    args: list[str], message: str, cli_env: dict[str, str], redis_client: redis.Redis
) -> None:
    before = keyspace(redis_client)
    proc = chordflow(*args, env={**cli_env, "COLUMNS": "400"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert keyspace(redis_client) == before


@pytest.mark.usefixtures("worker")
def test_nested_param_reaches_the_task_merged_with_the_file(cli_env: dict[str, str], client: Client) -> None:
    proc = chordflow(
        "run", NESTED, "--detach", "--param", "dbconn.db.port=6000", "--param", "dbconn.by_region.eu.host=e1",
        env=cli_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    assert client.wait(run_id, timeout_s=30).state == "succeeded"
    result = client.results(run_id)["dbconn"]
    assert result["db"] == {"host": "db1", "port": 6000}  # host from the file, port from --param
    assert result["by_region"] == {"eu": {"host": "e1", "port": 5432}}
    assert result["label"] == "primary"


def test_submit_params_for_an_unknown_task_is_refused(client: Client, redis_client: redis.Redis) -> None:
    pipeline = Pipeline("p").add_task(number, params={"value": 1}).add_task(dbconn)
    before = keyspace(redis_client)
    with pytest.raises(PipelineInvalid, match=r"task 'numbr': params given for unknown task \(tasks: number, dbconn\)"):
        client.submit(pipeline, params={"numbr": {"value": 2}})
    with pytest.raises(PipelineInvalid, match="field 'params.db.prot': unknown field"):
        client.submit(pipeline, params={"dbconn": {"db": {"prot": 1}}})
    assert keyspace(redis_client) == before
