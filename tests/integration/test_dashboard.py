"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against a real
``chordflow serve``, the session Redis and worker: the runs list, a live run's graph changing without a
reload, task logs (masked), the latency heatmap (one cell per task and run), cancel from the page, the
workers page; no error in the browser console. Screenshots go to ``tests/artifacts/``."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from orchestrator import keys
from tests.conftest import REPO
from tests.integration.test_api import AUTH, DATA, WEB_TOKEN, Server, _env, sse, submit
from tests.integration.test_cli import chordflow

CHROMIUM = os.environ.get("CHORDFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = REPO / "tests" / "artifacts"
FLOWER = "http://127.0.0.1:5555"
SECRET = "sk-dash-" + "q" * 24
HOSTILE = "<img src=x onerror=window.__xss=1>"
TASKS = ("extract", "transform", "audit", "validate", "load", "publish", "report")  #: tests/data/dash_flow.toml


def _playwright() -> Any:
    """Playwright's sync API; without it or without Chromium the browser tests fail (never skip: a skipped
    test proves nothing), saying what to install (``.ci/run`` installs Chromium when it is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need the playwright package: make install (requirements/dev.lock)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: apt-get install chromium "
                    "(or set CHORDFLOW_TEST_CHROMIUM to a Chromium binary)")  # fmt: skip
    return sync_playwright


@pytest.fixture(scope="module")
def server(worker_env: dict[str, str], worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = _env(worker_env, CHORDFLOW_API_TOKENS=f"web={WEB_TOKEN}", CHORDFLOW_SSE_HEARTBEAT_S="0.5",
               CHORDFLOW_FLOWER_URL=FLOWER)  # fmt: skip
    for file in ("dash_flow.toml", "api_steps.toml"):
        proc = chordflow("publish", str(DATA / file), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    srv = Server(env, tmp_path_factory.mktemp("dash") / "serve.log")
    yield srv
    srv.stop()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh page that records console errors and uncaught exceptions; none may occur."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1360, "height": 820}, base_url=server.url)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    assert errors == [], errors


def _wait_state(http: httpx.Client, run_id: str, task: str, state: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while http.get(f"/runs/{run_id}").json()["tasks"][task]["state"] != state:
        assert time.monotonic() < deadline, f"{task} never {state}"
        time.sleep(0.05)


def _finish(http: httpx.Client, run_id: str) -> dict[str, Any]:
    frames = [f for f in sse(http, f"/runs/{run_id}/events") if "event" in f]
    return frames[-1]["data"]


# -- browser --------------------------------------------------------------------------------------------


def test_the_runs_list_renders_with_state_progress_and_failed_tasks(http: httpx.Client, page: Any) -> None:
    ok = submit(http, "dash_flow")
    assert _finish(http, ok)["state"] == "succeeded"
    bad = submit(http, "dash_flow", {"transform": {"fail": True}})
    assert _finish(http, bad)["state"] == "failed"
    page.goto("/")  # redirects to the dashboard
    assert page.url.endswith("/dashboard")
    row = page.locator(f'tr[data-run="{bad}"]')
    row.wait_for()
    assert "failed" in row.inner_text() and "transform" in row.locator("td").nth(6).inner_text()
    assert "7/7" in page.locator(f'tr[data-run="{ok}"]').inner_text()
    page.select_option("#f-state", "failed")
    page.wait_for_function("location.hash.includes('state=failed')")
    page.locator(f'tr[data-run="{bad}"]').wait_for()
    assert page.locator(f'tr[data-run="{ok}"]').count() == 0
    page.screenshot(path=str(SHOTS / "runs.png"), full_page=True)


def test_a_live_run_changes_states_on_the_page_without_a_reload(http: httpx.Client, page: Any) -> None:
    audit = {"lines": 6, "seconds": 1.0, "api_key": SECRET, "say": HOSTILE}
    run_id = submit(http, "dash_flow", {"extract": {"seconds": 3.0}, "transform": {"seconds": 2.0}, "audit": audit})
    page.goto(f"/dashboard#/run/{run_id}")
    page.evaluate("window.__loadedOnce = true")
    box = 'g.node[data-box="{}"][data-state="{}"]'
    page.locator(box.format("extract", "running")).wait_for()
    page.locator(box.format("load", "pending")).wait_for()
    page.locator(box.format("transform", "running")).wait_for()
    page.screenshot(path=str(SHOTS / "run-live.png"))
    page.locator(box.format("report", "succeeded")).wait_for(timeout=60_000)
    page.locator("#run-state .badge.succeeded").wait_for()
    assert page.evaluate("window.__loadedOnce") is True  # the same document all along: no reload
    # a task's panel: attempts, host, duration and its log lines, newest first, secret masked
    page.click('g.node[data-box="audit"]')
    logs = page.locator("#logs")
    logs.locator("div").first.wait_for()
    text = logs.inner_text()
    assert "chatty.line" in text and SECRET not in text
    assert HOSTILE in text and page.evaluate("window.__xss") is None  # shown as text, never run
    page.screenshot(path=str(SHOTS / "run.png"))


def test_the_heatmap_has_one_cell_per_task_and_run(http: httpx.Client, page: Any) -> None:
    for run_id in [submit(http, "dash_flow") for _ in range(5)]:
        assert _finish(http, run_id)["state"] == "succeeded"
    hm = http.get("/pipelines/dash_flow/heatmap", params={"runs": 5}).json()
    assert len(hm["runs"]) == 5 and [r["task"] for r in hm["rows"]][0] == "extract"
    assert {r["task"] for r in hm["rows"]} == set(TASKS)
    page.goto("/dashboard#/heatmap/dash_flow?runs=5")
    page.locator("td.heat-cell").first.wait_for()
    cells = page.locator("td.heat-cell")
    assert cells.count() == len(TASKS) * 5
    pairs = {(c.get_attribute("data-task"), c.get_attribute("data-run")) for c in cells.all()}
    assert pairs == {(t, r["run_id"]) for t in TASKS for r in hm["runs"]}
    title = page.locator('td.heat-cell[data-task="extract"]').first.get_attribute("title")
    assert "median" in title and "extract" in title  # the value on hover
    page.screenshot(path=str(SHOTS / "heatmap.png"), full_page=True)


def test_cancel_from_the_page_cancels_the_run(http: httpx.Client, page: Any) -> None:
    run_id = submit(http, "api_steps", {"a": {"seconds": 30}})
    _wait_state(http, run_id, "a", "running")
    page.goto(f"/dashboard#/run/{run_id}")
    page.locator('g.node[data-box="a"][data-state="running"]').wait_for()
    page.click("#cancel")  # no token yet: the page asks for it, nothing is sent
    page.locator("#flash.error").wait_for()
    assert http.get(f"/runs/{run_id}").json()["state"] == "running"
    page.fill("#token", WEB_TOKEN)
    page.click("#cancel")
    page.locator("#run-state .badge.cancelled").wait_for()
    deadline = time.monotonic() + 30
    while http.get(f"/runs/{run_id}").json()["state"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page.locator('g.node[data-box="a"][data-state="cancelled"]').wait_for()
    page.screenshot(path=str(SHOTS / "cancelled.png"))


def test_the_workers_page_shows_the_worker_its_queue_and_what_it_runs(http: httpx.Client, page: Any) -> None:
    run_id = submit(http, "api_steps", {"a": {"seconds": 4}})
    _wait_state(http, run_id, "a", "running")
    page.goto("/dashboard#/workers")
    row = page.locator("tr", has_text="test-worker@")
    row.wait_for()
    deadline = time.monotonic() + 20
    while run_id not in row.inner_text():  # what it runs, from Celery's inspect (refreshed every 5 s)
        assert time.monotonic() < deadline, row.inner_text()
        page.wait_for_timeout(250)
    assert "chordflow" in row.inner_text()
    assert row.locator(f'a[href^="{FLOWER}/worker/test-worker@"]').count() == 1
    assert row.locator(f'a[href^="{FLOWER}/task/"]').count() >= 1
    page.screenshot(path=str(SHOTS / "workers.png"))
    http.post(f"/runs/{run_id}/cancel", headers=AUTH)


def test_a_1000_task_run_stays_usable(client: Any, page: Any) -> None:
    """10 layers of 100 tasks: drawn as 10 group boxes (layout computed once, on the server), each with its
    members' states; a group opens its member list, a member its panel."""
    from tests.pipelines import layered

    run_id = client.submit(layered(100, 10))
    started = time.monotonic()
    page.goto(f"/dashboard#/run/{run_id}")
    page.locator("svg#dag g.node").first.wait_for()
    shown_s = time.monotonic() - started
    assert page.locator("svg#dag g.node").count() == 10 and shown_s < 10, shown_s
    page.locator('g.node[data-box="group:9:n9"][data-state="succeeded"]').wait_for(timeout=120_000)
    page.click('g.node[data-box="group:4:n4"]')
    members = page.locator("#side a[data-task]")
    members.first.wait_for()
    assert members.count() == 100
    page.click('#side a[data-task="n4_42"]')
    page.locator("#side h2", has_text="n4_42").wait_for()
    page.screenshot(path=str(SHOTS / "run-1000.png"))
    print(f"1,000-task run page drawn in {shown_s:.2f} s")


def test_a_map_is_one_box_whose_chunk_bar_fills_live(client: Any, page: Any) -> None:
    from orchestrator import Pipeline
    from tests.map_tasks import span, square, total

    p = (
        Pipeline("dash-map")
        .add_task(span, params={"n": 60})
        .add_map(square, over="span", max_in_flight=4, params={"sleep_s": 0.1})
        .add_task(total, depends_on=["square"])
    )
    run_id = client.submit(p)
    page.goto(f"/dashboard#/run/{run_id}")
    box = page.locator('g.node[data-box="square"]')
    box.locator("text.sub", has_text="chunks").wait_for()
    seen = set()
    deadline = time.monotonic() + 60
    while "60/60 chunks" not in seen:
        assert time.monotonic() < deadline, seen
        seen.add(box.locator("text.sub").text_content())
        page.wait_for_timeout(100)
    partial = [t for t in seen if t.endswith(" chunks") and not t.startswith(("0/", "60/"))]
    assert partial, seen  # the bar moved while the map ran, not only at the end
    assert float(box.locator("rect.fill").get_attribute("width")) > 100
    assert page.locator("svg#dag g.node").count() == 3  # 60 chunks, one box
    page.locator('g.node[data-box="total"][data-state="succeeded"]').wait_for()


def test_log_lists_are_capped_newest_first_and_expire(redis_server: Any) -> None:
    from workers.log_sink import LogSink

    sink = LogSink(redis_server.url, ttl_s=120)
    run_id = "20010101-000000-10a5ee"
    n = keys.TASK_LOG_LINES + 2_100  # more than one flush carries (2,000): the rest must follow unprompted
    for i in range(n):
        sink.add(run_id, "m[7]", json.dumps({"event": "x", "i": i}))
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    key = keys.task_logs(run_id, "m")
    deadline = time.monotonic() + 10
    while not r.exists(key) or json.loads(r.lindex(key, 0))["i"] != n - 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.llen(key) == keys.TASK_LOG_LINES and 0 < r.ttl(key) <= 120
    assert json.loads(r.lindex(key, -1))["i"] == n - keys.TASK_LOG_LINES  # the oldest were trimmed
    r.delete(key)


def test_readme_screenshot_of_a_finished_run(http: httpx.Client, page: Any) -> None:
    """The README's picture: a finished run with a failed branch, its error panel open."""
    run_id = submit(http, "dash_flow", {"audit": {"api_key": SECRET}, "transform": {"fail": True}})
    assert _finish(http, run_id)["state"] == "failed"
    page.goto(f"/dashboard#/run/{run_id}?task=transform")
    page.locator("#side pre").wait_for()
    assert "failed on purpose" in page.locator("#side pre").inner_text()
    page.screenshot(path=str(SHOTS / "dashboard.png"))
    if os.environ.get("CHORDFLOW_UPDATE_SCREENSHOT"):
        shutil.copy(SHOTS / "dashboard.png", REPO / "docs" / "dashboard.png")


# -- the JSON behind it ---------------------------------------------------------------------------------


def test_dashboard_endpoints_refuse_bad_input_with_4xx(http: httpx.Client) -> None:
    missing = "20200101-000000-abcdef"
    for path in (f"/runs/{missing}/graph", f"/runs/{missing}/tasks/x/detail", f"/runs/{missing}/tasks/x/logs",
                 "/runs/nope/graph", "/pipelines/no_such_pipeline/heatmap", "/dashboard/static/../app.py"):  # fmt: skip
        resp = http.get(path)
        assert resp.status_code == 404, (path, resp.text)
        assert "detail" in resp.json()
    run_id = submit(http, "dash_flow")
    _finish(http, run_id)
    assert http.get(f"/runs/{run_id}/tasks/nope/detail").status_code == 404
    assert http.get(f"/runs/{run_id}/tasks/load/logs", params={"limit": 0}).status_code == 422
    assert http.get(f"/runs/{run_id}/tasks/load/error-report").status_code == 404
    assert http.get("/pipelines/dash_flow/heatmap", params={"runs": 1000}).status_code == 422
    schema = http.get("/openapi.json").json()["paths"]
    for path in ("/runs/{run_id}/graph", "/runs/{run_id}/tasks/{task}/logs", "/pipelines/{name}/heatmap", "/workers"):
        assert path in schema


def test_graph_task_detail_error_report_and_logs_never_show_secrets(http: httpx.Client) -> None:
    run_id = submit(http, "dash_flow", {"audit": {"api_key": SECRET}, "transform": {"fail": True}})
    assert _finish(http, run_id)["state"] == "failed"
    graph = http.get(f"/runs/{run_id}/graph").json()
    assert {b["id"]: b["layer"] for b in graph["boxes"]} == {
        "extract": 0, "transform": 1, "audit": 1, "validate": 1, "load": 2, "publish": 3, "report": 4}  # fmt: skip
    assert ["publish", "report"] in graph["edges"] and ["validate", "report"] in graph["edges"]
    detail = http.get(f"/runs/{run_id}/tasks/transform/detail").json()
    assert detail["status"]["state"] == "failed" and detail["attempts"][-1]["outcome"] == "failed"
    report = http.get(detail["error_report_url"])
    assert report.status_code == 200 and report.json()["error"]["type"] == "RuntimeError"
    deadline = time.monotonic() + 10
    while len(logs := http.get(f"/runs/{run_id}/tasks/audit/logs").json()["lines"]) < 5:  # 4 lines + succeeded
        assert time.monotonic() < deadline, logs
        time.sleep(0.1)
    assert logs[0]["event"] == "task.succeeded" and [x["line"] for x in logs[1:5]] == [3, 2, 1, 0]
    everything = json.dumps([graph, detail, report.json(), logs, http.get(f"/runs/{run_id}/tasks/audit/detail").json()])
    assert SECRET not in everything and "***" in json.dumps(logs)


def _fake_runs(r: redis.Redis, name: str, n: int, indexed: bool = True) -> list[str]:
    """``n`` finished runs of pipeline ``name`` (metas only, dated 2001, expiring in 10 minutes), oldest first."""
    base = 978_307_200.0  # 2001-01-01
    ids, pipe = [], r.pipeline(transaction=False)
    for i in range(n):
        rid = f"20010101-{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:06x}"
        ids.append(rid)
        meta = keys.run_keys(rid).meta
        state = "failed" if i % 100 == 0 else "succeeded"
        pipe.hset(meta, mapping={"run_id": rid, "pipeline": name, "state": state, "created_at": base + i,
                                 "started_at": base + i, "finished_at": base + i + 1, "total": 3,
                                 f"n_{state}": 3})  # fmt: skip
        pipe.expire(meta, 600)
        pipe.zadd(keys.RUNS_INDEX, {rid: base + i})
        if indexed:
            pipe.zadd(keys.pipeline_runs(name), {rid: base + i})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    r.expire(keys.pipeline_runs(name), 600)
    return ids


def test_runs_that_expired_leave_no_hole_in_a_page(http: httpx.Client, redis_client: redis.Redis) -> None:
    """A run's keys expire but its index entries stay: a page skips them and still comes back full, and the
    dead entries are dropped from both indexes (no index grows with runs that are gone)."""
    name = f"dash_gone_{os.getpid()}"
    ids = _fake_runs(redis_client, name, 40)  # oldest first
    gone = ids[-10:-2]  # 8 of the newest 10 expired
    redis_client.delete(*(keys.run_keys(rid).meta for rid in gone))
    body = http.get("/runs", params={"pipeline": name, "limit": 20}).json()
    alive = [rid for rid in reversed(ids) if rid not in gone]
    assert [row["run_id"] for row in body["runs"]] == alive[:20]
    assert body["next_offset"] == 20
    for index in (keys.pipeline_runs(name), keys.RUNS_INDEX):
        assert not any(redis_client.zscore(index, rid) is not None for rid in gone)
    assert redis_client.zcard(keys.pipeline_runs(name)) == 32


def test_runs_list_stays_fast_with_10000_runs(http: httpx.Client, redis_client: redis.Redis) -> None:
    """10,000 runs of one pipeline in the index (metas written directly, dated 2001 so they sort after every
    real run, expiring in 10 minutes): any page, filtered or not, reads only what it shows."""
    name = f"dash_bulk_{os.getpid()}"
    _fake_runs(redis_client, name, 10_000)
    timings = {}
    for label, params in {
        "first page": {"limit": 25},
        "page 400 (offset 9975)": {"limit": 25, "offset": 9975, "pipeline": name},
        "pipeline filter": {"limit": 25, "pipeline": name},
        "pipeline + state filter": {"limit": 25, "pipeline": name, "state": "failed"},
    }.items():
        http.get("/runs", params=params)  # warm
        started = time.perf_counter()
        resp = http.get("/runs", params=params)
        timings[label] = time.perf_counter() - started
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["runs"]) == 25, (label, resp.json())
    print("runs list with 10,000 runs:", {k: f"{v * 1000:.1f} ms" for k, v in timings.items()})
    assert timings["page 400 (offset 9975)"] < 0.5 and timings["pipeline filter"] < 0.5, timings
    page = http.get("/runs", params={"limit": 25, "offset": 9975, "pipeline": name}).json()
    assert page["runs"][-1]["run_id"].startswith("20010101-000000") and page["next_offset"] is None
    failed = http.get("/runs", params={"limit": 25, "pipeline": name, "state": "failed"}).json()["runs"]
    assert all(r["state"] == "failed" for r in failed)


def test_with_closed_reads_the_page_loads_and_its_data_needs_the_token(
    worker_env: dict[str, str], worker: Any, tmp_path: Path, server: Server
) -> None:
    srv = Server(_env(worker_env, CHORDFLOW_API_TOKEN=WEB_TOKEN, CHORDFLOW_API_OPEN_READS="false"), tmp_path / "s.log")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/dashboard").status_code == 200 and c.get("/dashboard/static/app.js").status_code == 200
            assert c.get("/workers").status_code == 401 and c.get("/pipelines/dash_flow/heatmap").status_code == 401
            assert c.get("/pipelines/dash_flow/heatmap", headers=AUTH).status_code == 200
    finally:
        srv.stop()


def test_a_failed_map_is_named_among_the_failed_tasks_of_its_run(client: Any, http: httpx.Client) -> None:
    from orchestrator import Pipeline
    from tests.map_tasks import span, square, total

    name = f"dash-map-fail-{os.getpid()}"
    p = (
        Pipeline(name)
        .add_task(span, params={"n": 300})
        .add_map(square, over="span", params={"fail_on": list(range(0, 300, 2))})
        .add_task(total, depends_on=["square"])
    )
    run_id = client.submit(p)
    assert client.wait(run_id, timeout_s=120).state == "failed"
    (row,) = http.get("/runs", params={"pipeline": name}).json()["runs"]
    assert row["run_id"] == run_id and row["failed_tasks"] == ["square"]  # the map, not its failed chunks


def test_runs_made_before_the_pipeline_indexes_are_indexed_once(settings: Any, redis_client: redis.Redis) -> None:
    import asyncio

    from orchestrator.aio import AsyncClient

    name = f"dash_old_{os.getpid()}"
    ids = _fake_runs(redis_client, name, 30, indexed=False)  # as an older chordflow left them
    redis_client.delete(keys.PIPELINES_INDEXED)

    async def main() -> list[str]:
        c = AsyncClient(settings)
        try:
            return [s.run_id for s in await c.runs(limit=50, pipeline=name)]
        finally:
            await c.aclose()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        assert pool.submit(asyncio.run, main()).result() == ids[::-1]
    assert redis_client.exists(keys.PIPELINES_INDEXED) and redis_client.zcard(keys.pipeline_runs(name)) == 30
