"""The HTTP service as a web app uses it: a real ``chordflow serve`` (uvicorn) on a free port, the
session Redis and worker, httpx for requests and server-sent events."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from orchestrator import keys
from orchestrator.embedded import WorkerProcess, die_with_parent, free_port, terminate_group
from tests.conftest import REPO, marked_processes
from tests.integration.test_cli import chordflow

DATA = REPO / "tests" / "data"
WEB_TOKEN = "web-" + "t" * 28
OPS_TOKEN = "ops-" + "o" * 28
AUTH = {"Authorization": f"Bearer {WEB_TOKEN}"}
MAX_BODY = 20_000


class Server:
    """A ``chordflow serve`` subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(self.port)],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,  # noqa: PLW1509
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("chordflow serve did not come up:\n" + log.read_text()[-3000:])

    def stop(self) -> None:
        terminate_group(self.proc, grace_s=5)


def _env(base: dict[str, str], **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(base)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def api_env(worker_env: dict[str, str]) -> dict[str, str]:
    return _env(
        worker_env,
        CHORDFLOW_API_TOKENS=f"web={WEB_TOKEN}, ops={OPS_TOKEN}",
        CHORDFLOW_API_MAX_BODY_BYTES=str(MAX_BODY),
        CHORDFLOW_SSE_HEARTBEAT_S="0.5",
    )


@pytest.fixture(scope="module")
def server(api_env: dict[str, str], worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for file in ("api_steps.toml", "api_gate.toml", "api_secret.toml", "../../tasks/etl/pipeline.toml",
                 "../../tasks/csvstats/pipeline.toml"):
        proc = chordflow("publish", str(DATA / file), env=api_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    srv = Server(api_env, tmp_path_factory.mktemp("api") / "serve.log")
    yield srv
    srv.stop()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def sse(http: httpx.Client, path: str, headers: dict[str, str] | None = None, stop_after: int | None = None,
        timeout_s: float = 60) -> list[dict[str, Any]]:  # fmt: skip
    """The SSE frames of ``path`` (comments as ``{"comment": ...}``) until the server ends the stream."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    with http.stream("GET", path, headers=headers or {}, timeout=timeout_s) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            assert time.monotonic() < deadline, f"stream not finished after {timeout_s}s: {frames[-5:]}"
            if line.startswith(":"):
                frames.append({"comment": line[1:].strip()})
            elif line == "":
                if current:
                    if "data" in current:
                        current["data"] = json.loads(current["data"])
                    frames.append(current)
                    current = {}
                    if stop_after is not None and sum("event" in f for f in frames) >= stop_after:
                        break
            else:
                key, _, value = line.partition(":")
                current[key] = value[1:] if value.startswith(" ") else value
    return frames


def events_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if "event" in f]


def stream_ids(r: redis.Redis, run_id: str) -> list[str]:
    return [eid for eid, _ in r.xrange(keys.run_keys(run_id).events)]


def submit(http: httpx.Client, pipeline: str, params: dict[str, Any] | None = None) -> str:
    resp = http.post("/runs", json={"pipeline": pipeline, "params": params or {}}, headers=AUTH)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["run_id"])


# -- the web app's path: published pipeline by name -> SSE -> results -----------------------------------


def test_etl_by_name_submit_then_sse_then_results_and_artifacts(http: httpx.Client, redis_client: redis.Redis) -> None:
    listed = {p["name"]: p for p in http.get("/pipelines").json()}
    etl = listed["etl"]
    assert etl["params_schema"]["ingest"]["properties"]["rows"]["type"] == "integer"
    assert etl["params_schema"]["ingest"]["additionalProperties"] is False
    assert etl["defaults"]["ingest"]["rows"] == 20000 and etl["tasks"][0] == "ingest"

    run_id = submit(http, "etl", {"ingest": {"rows": 3000}, "daily_revenue": {"slow_s": 0}})
    frames = sse(http, f"/runs/{run_id}/events")
    events = events_of(frames)
    assert events[0]["event"] == "snapshot" and events[0]["data"]["run_id"] == run_id
    assert set(events[0]["data"]["tasks"]) == set(etl["tasks"])
    assert events[-1]["event"] == "run" and events[-1]["data"]["state"] == "succeeded"
    live = events[1:]
    assert all(e["id"] for e in live)
    ids = stream_ids(redis_client, run_id)
    assert [e["id"] for e in live] == ids[ids.index(live[0]["id"]) :]  # every event after the snapshot, in order
    assert any(e["event"] == "progress" and e["data"]["node"] == "ingest" for e in live)
    assert any(e["event"] == "task" and e["data"] == {**e["data"], "node": "report", "state": "succeeded"}
               for e in live)  # fmt: skip

    status = http.get(f"/runs/{run_id}").json()
    assert status["state"] == "succeeded" and status["pipeline"] == "etl"
    ingest = status["tasks"]["ingest"]
    assert ingest["attempts"] == 1 and ingest["host"] and ingest["finished_at"] >= ingest["started_at"]
    results = http.get(f"/runs/{run_id}/results").json()
    assert results["ingest"]["row_count"] == 3000 and "report" in results

    listing = http.get(f"/runs/{run_id}/tasks/report/artifacts").json()
    names = {f["name"]: f for f in listing["files"]}
    assert "result.json" in names
    body = http.get(names["result.json"]["url"])
    assert body.status_code == 200 and json.loads(body.text) == results["report"]


def test_a_map_pipeline_by_name_streams_map_events_and_reports_chunks(http: httpx.Client) -> None:
    """The csvstats example (a map over byte ranges) through HTTP: SSE `map` events, the map's counts."""
    run_id = submit(http, "csvstats", {"generate": {"rows": 20000}, "split": {"chunk_bytes": 50000}})
    events = events_of(sse(http, f"/runs/{run_id}/events"))
    assert events[-1]["event"] == "run" and events[-1]["data"]["state"] == "succeeded", events[-3:]
    maps = [e["data"] for e in events if e["event"] == "map"]
    assert maps and all(m["node"] == "parse" for m in maps)
    assert maps[-1]["succeeded"] == maps[-1]["total"] and int(maps[-1]["items"]) == 20000
    status = http.get(f"/runs/{run_id}").json()
    parse = status["maps"]["parse"]
    assert parse["total"] == parse["succeeded"] >= 5 and parse["failed"] == 0 and parse["items"] == 20000
    assert http.get(f"/runs/{run_id}/results").json()["stats"]["rows"] == 20000


def test_runs_list_is_paged_and_filtered(http: httpx.Client) -> None:
    for _ in range(3):
        submit(http, "api_steps", {"a": {"seconds": 0}, "b": {"seconds": 0}})
    page = http.get("/runs", params={"pipeline": "api_steps", "limit": 2}).json()
    assert len(page["runs"]) == 2 and page["next_offset"] == 2
    assert all(r["pipeline"] == "api_steps" for r in page["runs"])
    nxt = http.get("/runs", params={"pipeline": "api_steps", "limit": 2, "offset": 2}).json()
    assert nxt["runs"] and not {r["run_id"] for r in nxt["runs"]} & {r["run_id"] for r in page["runs"]}
    for state in ("succeeded", "running"):
        runs = http.get("/runs", params={"state": state, "limit": 50}).json()["runs"]
        assert all(r["state"] == state for r in runs)
    assert http.get("/runs", params={"state": "bogus"}).status_code == 422
    assert http.get("/runs", params={"limit": 0}).status_code == 422


# -- validation, not found, auth, limits --------------------------------------------------------------


def test_invalid_params_are_422_naming_task_and_field_and_create_nothing(
    http: httpx.Client, redis_client: redis.Redis
) -> None:
    before = redis_client.zcard(keys.RUNS_INDEX)
    cases = [
        ({"conn": {"db": {"hots": "x"}}}, ("conn", "params.db.hots", "unknown field")),
        ({"conn": {"replicas": [{"port": "five"}]}}, ("conn", "params.replicas.0.port", "valid integer")),
        ({"a": {"seconds": "slow"}}, ("a", "params.seconds", "valid number")),
        ({"nope": {"x": 1}}, ("nope", None, "unknown task")),
        ({"a": 5}, ("a", None, "must be a mapping")),
    ]
    for params, (task, field, words) in cases:
        resp = http.post("/runs", json={"pipeline": "api_steps", "params": params}, headers=AUTH)
        assert resp.status_code == 422, resp.text
        problems = resp.json()["problems"]
        assert any(p["task"] == task and p["field"] == field and words in p["message"] for p in problems), problems
        assert f"task '{task}'" in resp.json()["detail"]
    resp = http.post("/runs", json={"pipeline": "api_steps", "params": {}, "extra": 1}, headers=AUTH)
    assert resp.status_code == 422 and resp.json()["problems"][0]["field"] == "extra"
    assert http.post("/runs", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}).status_code \
        == 422  # fmt: skip
    assert redis_client.zcard(keys.RUNS_INDEX) == before


def test_unknown_pipeline_run_and_malformed_ids_are_404_never_500(http: httpx.Client) -> None:
    resp = http.post("/runs", json={"pipeline": "no_such_pipeline"}, headers=AUTH)
    assert resp.status_code == 404 and "no published pipeline 'no_such_pipeline'" in resp.json()["detail"]
    assert http.get("/pipelines/no_such_pipeline").status_code == 404
    for rid in ("20990101-000000-abcdef", "not-a-run", "..%2F..%2Fetc", "x" * 300, "%00"):
        for path in (f"/runs/{rid}", f"/runs/{rid}/results", f"/runs/{rid}/events", f"/runs/{rid}/tasks/a/artifacts"):
            resp = http.get(path)
            assert resp.status_code == 404, (path, resp.status_code, resp.text)
            assert "Traceback" not in resp.text
        for verb in ("cancel", "retry"):
            assert http.post(f"/runs/{rid}/{verb}", headers=AUTH).status_code == 404


def test_an_unexpected_error_is_a_500_without_details(http: httpx.Client, redis_client: redis.Redis,
                                                      server: Server) -> None:  # fmt: skip
    run_id = "20000101-000000-0bad00"  # a record no ledger wrote: a count that is not a number
    meta = keys.run_keys(run_id).meta
    redis_client.hset(meta, mapping={"run_id": run_id, "state": "running", "total": "lots", "pipeline": "x"})
    redis_client.expire(meta, 600)
    try:
        resp = http.get(f"/runs/{run_id}")
        assert resp.status_code == 500 and resp.json() == {"detail": "internal error (logged on the server)",
                                                           "problems": []}  # fmt: skip
        assert "lots" not in resp.text and "Traceback" not in resp.text
        assert "unexpected error on GET /runs/" in server.log.read_text()
    finally:
        redis_client.delete(meta)


def test_artifacts_stay_under_the_artifact_root(http: httpx.Client) -> None:
    run_id = submit(http, "api_steps", {"a": {"seconds": 0}, "b": {"seconds": 0}})
    sse(http, f"/runs/{run_id}/events")
    assert http.get(f"/runs/{run_id}/tasks/nope/artifacts").status_code == 404
    for name in ("..", "%2e%2e%2fresult.json", "..%2F..%2Ffailed_tasks.log", ".hidden"):
        resp = http.get(f"/runs/{run_id}/tasks/a/artifacts/{name}")
        assert resp.status_code == 404, (name, resp.status_code)
    assert http.get(f"/runs/{run_id}/tasks/errors/artifacts").status_code == 404


def test_mutations_need_a_valid_bearer_token(http: httpx.Client) -> None:
    body = {"pipeline": "api_steps", "params": {}}
    assert http.post("/runs", json=body).status_code == 401
    assert http.post("/runs", json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    assert http.post("/runs", json=body, headers={"Authorization": "Bearer wrong-token-xxxxxxxxxx"}).status_code == 403
    assert http.post("/runs", json=body, headers={"Authorization": f"Bearer {WEB_TOKEN}x"}).status_code == 403
    run_id = submit(http, "api_steps", {"a": {"seconds": 0}, "b": {"seconds": 0}})
    for verb in ("cancel", "retry"):
        assert http.post(f"/runs/{run_id}/{verb}").status_code == 401
        assert http.post(f"/runs/{run_id}/{verb}", headers={"Authorization": "Bearer nope"}).status_code == 403
    ops = http.post("/runs", json=body, headers={"Authorization": f"Bearer {OPS_TOKEN}"})  # a second client's token
    assert ops.status_code == 201
    assert http.get(f"/runs/{run_id}").status_code == 200  # reads are open by default


def test_request_bodies_are_size_limited(http: httpx.Client) -> None:
    big = {"pipeline": "api_steps", "params": {"conn": {"label": "x" * (MAX_BODY + 10)}}}
    resp = http.post("/runs", json=big, headers=AUTH)
    assert resp.status_code == 413 and "larger than" in resp.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"pipeline": "api_steps", "params": {"conn": {"label": "'
        for _ in range(MAX_BODY // 1000 + 2):
            yield b"y" * 1000
        yield b'"}}}'

    resp = http.post("/runs", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 413


def test_secret_params_never_appear_in_responses(http: httpx.Client) -> None:
    text = http.get("/pipelines").text + http.get("/pipelines/api_secret").text
    assert "api_secret" in text and "SECRET-" not in text
    resp = http.post("/runs", json={"pipeline": "api_secret", "params": {"canary": {"api_key": 987654321}}},
                     headers=AUTH)  # fmt: skip
    assert resp.status_code == 422 and "params.api_key" in resp.text
    assert "987654321" not in resp.text and "SECRET-" not in resp.text


def test_no_token_configured_refuses_mutations_and_closed_reads_need_one(
    worker_env: dict[str, str], worker: Any, tmp_path: Path
) -> None:
    srv = Server(_env(worker_env, CHORDFLOW_API_OPEN_READS="false"), tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            resp = c.post("/runs", json={"pipeline": "api_steps"}, headers=AUTH)
            assert resp.status_code == 403 and "no API token is configured" in resp.json()["detail"]
            assert c.get("/pipelines").status_code == 403
            assert c.get("/healthz").status_code == 200
    finally:
        srv.stop()


def test_redis_down_is_503_and_healthz_still_up(worker_env: dict[str, str], tmp_path: Path) -> None:
    dead = f"redis://:pw@127.0.0.1:{free_port()}/0"
    srv = Server(_env(worker_env, CHORDFLOW_REDIS_URL=dead, CHORDFLOW_API_TOKEN=WEB_TOKEN), tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            assert c.get("/healthz").status_code == 200
            for resp in (c.get("/readyz"), c.get("/runs"), c.post("/runs", json={"pipeline": "etl"}, headers=AUTH)):
                assert resp.status_code == 503, resp.text
                assert "Redis is unavailable" in resp.json()["detail"] and ":pw@" not in resp.text
    finally:
        srv.stop()


def test_readyz_sees_redis_and_a_live_worker(http: httpx.Client) -> None:
    resp = http.get("/readyz")
    assert resp.status_code == 200 and resp.json()["workers"] >= 1


def test_example_page_and_openapi_are_served(http: httpx.Client) -> None:
    page = http.get("/example")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "new EventSource(`/runs/${runId}/events`)" in page.text and "#token" not in page.text.split("<script")[0]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    spec = http.get("/openapi.json").json()
    assert {"/runs", "/runs/{run_id}/events", "/pipelines", "/readyz"} <= set(spec["paths"])
    assert http.get("/docs").status_code == 200


# -- server-sent events -----------------------------------------------------------------------------------


def test_sse_resume_with_last_event_id_loses_and_repeats_nothing(http: httpx.Client, redis_client: redis.Redis) -> None:
    run_id = submit(http, "api_steps", {"a": {"seconds": 0.5}, "b": {"seconds": 0.5}, "c": {"seconds": 0.5}})
    first = events_of(sse(http, f"/runs/{run_id}/events", stop_after=4))  # snapshot + 3 events, then cut
    assert first[0]["event"] == "snapshot"
    seen = [e["id"] for e in first[1:]]
    rest = events_of(sse(http, f"/runs/{run_id}/events", headers={"Last-Event-ID": seen[-1]}))
    assert all(e["event"] != "snapshot" for e in rest)
    assert rest[-1]["event"] == "run" and rest[-1]["data"]["state"] == "succeeded"
    ids = stream_ids(redis_client, run_id)
    got = seen + [e["id"] for e in rest]
    assert got == ids[ids.index(seen[0]) :], "events lost or repeated across the reconnect"
    start = ids.index(seen[0])
    assert [e["id"] for e in events_of(sse(http, f"/runs/{run_id}/events?after={ids[start]}"))] == ids[start + 1 :]
    # a late client on a finished run: a complete snapshot, then the end
    late = events_of(sse(http, f"/runs/{run_id}/events"))
    assert [e["event"] for e in late] == ["snapshot", "run"]
    assert all(t["state"] == "succeeded" for t in late[0]["data"]["tasks"].values())
    # resuming after the terminal event: told it is over, not left reconnecting
    over = events_of(sse(http, f"/runs/{run_id}/events", headers={"Last-Event-ID": ids[-1]}))
    assert [e["event"] for e in over] == ["end"] and "id" not in over[0]
    assert http.get(f"/runs/{run_id}/events", headers={"Last-Event-ID": "garbage"}).status_code == 400
    # a client whose position was trimmed away (EVENTS_MAXLEN) gets a fresh snapshot, not a silent gap
    redis_client.xtrim(keys.run_keys(run_id).events, maxlen=2, approximate=False)
    trimmed = events_of(sse(http, f"/runs/{run_id}/events", headers={"Last-Event-ID": ids[1]}))
    assert [e["event"] for e in trimmed] == ["snapshot", "run"] and trimmed[0]["data"]["state"] == "succeeded"


def test_cancel_and_retry_through_the_api(http: httpx.Client, redis_client: redis.Redis) -> None:
    run_id = submit(http, "api_steps", {"a": {"seconds": 30}})
    deadline = time.monotonic() + 30
    while http.get(f"/runs/{run_id}").json()["tasks"]["a"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    resp = http.post(f"/runs/{run_id}/retry", headers=AUTH)
    assert resp.status_code == 409 and "has not finished" in resp.json()["detail"]
    frames: list[dict[str, Any]] = []

    async def watch() -> None:
        frames.extend(await asyncio.to_thread(sse, http, f"/runs/{run_id}/events", None, None, 60))

    async def cancel_later() -> httpx.Response:
        await asyncio.sleep(1.2)  # long enough for keepalives on a quiet stream (heartbeat 0.5 s)
        return await asyncio.to_thread(http.post, f"/runs/{run_id}/cancel", headers=AUTH)

    async def both() -> httpx.Response:
        _, resp = await asyncio.gather(watch(), cancel_later())
        return resp

    resp = asyncio.run(both())
    assert resp.status_code == 200 and resp.json()["run_id"] == run_id
    assert {"comment": "keepalive"} in frames
    assert events_of(frames)[-1]["data"]["state"] == "cancelled"
    assert http.get(f"/runs/{run_id}").json()["state"] == "cancelled"

    gate = submit(http, "api_gate", {"gate": {"flag": f"tests:api:flag:{run_id}"}})
    assert events_of(sse(http, f"/runs/{gate}/events"))[-1]["data"]["state"] == "failed"
    error = http.get(f"/runs/{gate}").json()["tasks"]["gate"]["error"]
    assert "is not set" in json.dumps(error)
    redis_client.set(f"tests:api:flag:{run_id}", "1", ex=600)
    resp = http.post(f"/runs/{gate}/retry", headers=AUTH)
    assert resp.status_code == 200 and resp.json()["retried"] == 1
    assert events_of(sse(http, f"/runs/{gate}/events"))[-1]["data"]["state"] == "succeeded"
    assert http.get(f"/runs/{gate}/results").json()["gate"]["value"] == 2


def test_200_concurrent_sse_clients_each_receive_every_event(server: Server, redis_client: redis.Redis) -> None:
    n_clients = 200
    with httpx.Client(base_url=server.url, timeout=30) as http:
        run_id = submit(http, "api_steps", {"a": {"seconds": 3}, "b": {"seconds": 0.5}, "c": {"seconds": 0.5}})
    connected = 0

    async def client(c: httpx.AsyncClient) -> list[str]:
        nonlocal connected
        ids: list[str] = []
        async with c.stream("GET", f"/runs/{run_id}/events", params={"after": "0-0"}) as resp:
            assert resp.status_code == 200
            connected += 1
            async for line in resp.aiter_lines():
                if line.startswith("id: "):
                    ids.append(line[4:])
        return ids

    async def main() -> list[list[str]]:
        limits = httpx.Limits(max_connections=n_clients + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as c:
            return await asyncio.wait_for(asyncio.gather(*(client(c) for _ in range(n_clients))), 90)

    started = time.monotonic()
    got = asyncio.run(main())
    elapsed = time.monotonic() - started
    ids = stream_ids(redis_client, run_id)
    last = redis_client.xrevrange(keys.run_keys(run_id).events, count=1)[0][1]
    assert last["kind"] == "run" and last["state"] == "succeeded"
    assert connected == n_clients
    assert all(g == ids for g in got), f"{sum(g != ids for g in got)} of {n_clients} clients missed events"
    print(f"\n{n_clients} SSE clients x {len(ids)} events in {elapsed:.2f}s")


# -- no task code in the web process; workers publish ------------------------------------------------------

NO_TASK_CODE = """
import asyncio, json, sys
sys.modules["tasks"] = None  # the web process cannot import task code
sys.modules["tests"] = None
from orchestrator.aio import AsyncClient
from orchestrator.client import Client
from orchestrator.errors import PipelineInvalid
from orchestrator.settings import Settings

client = Client(Settings())
run_id = client.submit("api_steps", {"a": {"seconds": 0}, "conn": {"db": {"port": 6543}}})
snap = client.wait(run_id, timeout_s=60, poll_s=0.2)
try:
    client.submit("api_steps", {"conn": {"db": {"prot": 1}}})
    problems = []
except PipelineInvalid as exc:
    problems = [str(p) for p in exc.problems]

async def main():
    ac = AsyncClient(Settings())
    rid = await ac.submit("api_steps", {"a": {"seconds": 0}})
    events = [f async for _, f in ac.events(rid)]
    final = await ac.wait(rid, timeout_s=60)
    await ac.aclose()
    return events, final.state

events, state = asyncio.run(main())
print(json.dumps({"state": snap.state, "conn": client.results(run_id)["conn"]["db"], "problems": problems,
                  "async_state": state, "last_event": events[-1],
                  "imported": sorted(m for m, v in sys.modules.items() if v and m.split(".")[0] in ("tasks", "tests")),
                  }))
"""


def test_a_web_process_without_task_code_submits_by_name_sync_and_async(
    server: Server, api_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(api_env)
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", NO_TASK_CODE], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["state"] == "succeeded" and out["conn"] == {"host": "db1", "port": 6543}  # defaults deep-merged
    assert out["problems"] == [
        "task 'conn': field 'params.db.prot': unknown field (known: host, port)"
    ]
    assert out["async_state"] == "succeeded"
    assert out["last_event"]["kind"] == "run" and out["last_event"]["state"] == "succeeded"
    assert out["imported"] == []


def test_workers_publish_the_configured_pipeline_files_at_start(
    redis_server: Any, worker_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    name = f"published_by_worker_{os.getpid()}"
    (tmp_path / "pipes" / "x").mkdir(parents=True)
    (tmp_path / "pipes" / "x" / "pipeline.toml").write_text(
        (DATA / "ok.toml").read_text().replace('name = "ok"', f'name = "{name}"')
    )
    (tmp_path / "pipes" / "bad.toml").write_text("[pipeline]\nname = 'bad'\n")
    assert redis_client.hget(keys.PIPELINES, name) is None
    worker = WorkerProcess(
        redis_server.url, "publisher-test@%h", concurrency=1, queues=["publisher-test"],
        log_path=tmp_path / "worker.log", cwd=REPO,
        extra_env={**worker_env, "CHORDFLOW_PUBLISH_PIPELINES": f"{tmp_path}/pipes/**/*.toml"},
    ).start()  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while redis_client.hget(keys.PIPELINES, name) is None:
            assert worker.alive, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.1)
    finally:
        worker.stop()
    record = json.loads(redis_client.hget(keys.PIPELINES, name))
    assert record["plan"]["order"] == ["number", "double"] and record["hash"] and record["published_at"] > 0
    assert redis_client.hget(keys.PIPELINES, "bad") is None


def test_make_webapp_one_command_in_embedded_mode(tmp_path: Path) -> None:
    """`make webapp`'s command with no Redis configured: private Redis + workers, the example pipeline
    published, a generated token printed once, the page served, etl submitted by name; clean exit."""
    marker = f"webapp-{os.getpid()}-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORDFLOW_")}
    env.update(CHORDFLOW_ARTIFACT_ROOT=str(tmp_path / "artifacts"), CHORDFLOW_TEST_MARKER=marker, C_FORCE_ROOT="1")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(port)], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=die_with_parent)  # fmt: skip  # noqa: PLW1509
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:  # ends when the URL is printed (or the process exits)
            lines.append(line)
            if "/example#token=" in line:
                break
        out = "".join(lines)
        assert "published pipeline 'etl'" in out, out
        token = out.split("#token=")[1].split()[0]
        assert out.count(token) == 2  # the token line and the page's address, nothing else
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            assert "EventSource" in c.get("/example").text
            deadline = time.monotonic() + 60
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "embedded workers never became ready"
                time.sleep(0.2)
            body = {"pipeline": "etl", "params": {"ingest": {"rows": 1000}, "daily_revenue": {"slow_s": 0}}}
            assert c.post("/runs", json=body).status_code == 401
            resp = c.post("/runs", json=body, headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 201, resp.text
            run_id = resp.json()["run_id"]
            assert events_of(sse(c, f"/runs/{run_id}/events"))[-1]["data"]["state"] == "succeeded"
            assert c.get(f"/runs/{run_id}/results").json()["report"]["total_orders"] > 900
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        terminate_group(proc, grace_s=5)
    time.sleep(0.5)
    assert marked_processes(marker) == []


NODE_SHIMS = r"""
const BASE = process.env.BASE;
const els = {};
globalThis.document = {getElementById: (id) => els[id] ??= {id, textContent: "", value: id === "rows" ? "1000" : "",
  hidden: false, disabled: false, className: "", max: 1}};
globalThis.location = {hash: "#token=" + process.env.TOKEN};
const realFetch = fetch;
globalThis.fetch = (url, opts) => realFetch(BASE + url, opts);
globalThis.EventSource = class {  // the browser API, over fetch: named events, data lines, close()
  constructor(url) { this.on = {}; this.closed = false; this.ctrl = new AbortController(); this.run(BASE + url); }
  addEventListener(type, fn) { (this.on[type] ??= []).push(fn); }
  close() { this.closed = true; this.ctrl.abort(); }
  async run(url) {
    try {
      const reader = (await realFetch(url, {signal: this.ctrl.signal})).body.getReader();
      const dec = new TextDecoder(); let buf = "";
      while (!this.closed) {
        const {value, done} = await reader.read(); if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0 && !this.closed) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          let type = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) for (const fn of this.on[type] ?? []) fn({data});
        }
      }
    } catch (e) { if (!this.closed) { console.log("stream error " + e); process.exit(3); } }
  }
};
"""

NODE_DRIVER = r"""
document.getElementById("go").onclick();
const started = Date.now();
const timer = setInterval(() => {
  if (!els.result.hidden && els.result.textContent) {
    clearInterval(timer);
    console.log(JSON.stringify({status: els.status.textContent, bar: [els.bar.value, els.bar.max],
                                result: JSON.parse(els.result.textContent), disabled: els.go.disabled}));
    process.exit(0);
  }
  if (Date.now() - started > 90000) { console.log("timeout: " + els.status.textContent); process.exit(1); }
}, 50);
"""


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_the_example_page_script_submits_follows_and_shows_the_result(server: Server, tmp_path: Path) -> None:
    """The page's own JavaScript, run by node with a minimal DOM and an EventSource over fetch."""
    page = httpx.get(server.url + "/example").text
    script = page.split("<script>")[1].split("</script>")[0]
    (tmp_path / "page.js").write_text(NODE_SHIMS + script + NODE_DRIVER)
    env = {**os.environ, "BASE": server.url, "TOKEN": WEB_TOKEN}
    proc = subprocess.run(["node", str(tmp_path / "page.js")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"].endswith(": succeeded") and out["bar"] == [7, 7] and out["disabled"] is False
    assert out["result"]["total_orders"] > 900 and out["result"]["path"].endswith("report.md")


def test_per_run_notifications_through_the_api_are_checked_stored_and_not_echoed(
    http: httpx.Client, redis_client: redis.Redis
) -> None:
    """POST /runs takes run-end notification targets: a bad one is a 422 naming the field; a good one is stored
    in the run (workers deliver it, tests/integration/test_notify.py) and its URL token is never shown back."""
    bad = http.post("/runs", json={"pipeline": "api_steps", "notify": {"webhooks": ["ftp://x/y"]}}, headers=AUTH)
    assert bad.status_code == 422 and any("notify" in str(p["field"]) for p in bad.json()["problems"]), bad.text
    token = "tok" + uuid.uuid4().hex
    resp = http.post("/runs", json={"pipeline": "api_steps", "notify": {"webhooks": [f"http://127.0.0.1:9/h?t={token}"],
                     "emails": ["ops@example.org"], "on": ["failed"]}}, headers=AUTH)  # fmt: skip
    assert resp.status_code == 201, resp.text
    run_id = resp.json()["run_id"]
    stored = json.loads(redis_client.hget(keys.run_keys(run_id).meta, "notify"))
    assert stored["emails"] == ["ops@example.org"] and token in stored["webhooks"][0] and stored["on"] == ["failed"]
    shown = http.get(f"/runs/{run_id}").text
    assert token not in shown and "notifications" in http.get(f"/runs/{run_id}").json()
