"""Map nodes (C6) end to end: real Redis, the session's real Celery worker (4 processes).

Widths decided at run time (0, 1, 2,000), map after map without a barrier, back-pressure measured from
the ledger's own event stream, partial failure, retry of failed chunks only, cancel mid-map, and the
size of the largest message for 10 and 10,000 chunks.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.keys import run_keys
from tests.conftest import run_to_end
from tests.map_tasks import add_offset, offset, plus_one, quick, span, square, square_elsewhere, total, total_after

pytestmark = pytest.mark.usefixtures("worker")


def _map_pipeline(n: int, name: str = "map", **map_options: object) -> Pipeline:
    params = map_options.pop("params", {})
    return (
        Pipeline(name)
        .add_task(span, params={"n": n})
        .add_map(square, over="span", params=params, **map_options)  # type: ignore[arg-type]
        .add_task(total, depends_on=["square"])
    )


def _map_events(r: redis.Redis, run_id: str, node: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange(run_keys(run_id).events) if f.get("kind") == "map" and f.get("node") == node]


def _log(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(" ".join(line.split()[:2]) for line in path.read_text().splitlines())


@pytest.mark.parametrize("width", [0, 1, 2000])
def test_width_is_decided_at_run_time(client: Client, width: int) -> None:
    """The same pipeline maps over 0, 1 or 2,000 elements; the reduce gets every result in input order."""
    snap = run_to_end(client, _map_pipeline(width, max_in_flight=64), timeout_s=120)
    assert snap.state == "succeeded", (snap.states, snap.errors)
    result = client.results(snap.run_id)["total"]
    assert result == {"sum": sum(i * i for i in range(width)), "n": width, "first": [i * i for i in range(width)][:3],
                      "failed": []}  # fmt: skip
    assert snap.maps["square"] == {"total": width, "succeeded": width, "failed": 0, "running": 0, "queued": 0,
                                   "pending": 0, "items": width, "allowed_failures": 0}  # fmt: skip
    assert snap.states["square"] == "succeeded" and snap.states["total"] == "succeeded"


def test_batches_group_small_items_and_the_reduce_streams_them(client: Client) -> None:
    """1,000 elements in chunks of 100: 10 chunks (10 messages), the task still called per element."""
    snap = run_to_end(client, _map_pipeline(1000, batch_size=100))
    assert snap.state == "succeeded"
    assert snap.maps["square"]["total"] == 10 and snap.maps["square"]["items"] == 1000
    assert client.results(snap.run_id)["total"]["sum"] == sum(i * i for i in range(1000))


def test_max_in_flight_is_never_exceeded(client: Client, redis_client: redis.Redis) -> None:
    """Every transition of the map (the ledger's own events, written atomically with it) has at most
    max_in_flight chunks queued or running."""
    snap = run_to_end(client, _map_pipeline(300, max_in_flight=5, params={"sleep_s": 0.005}), timeout_s=120)
    assert snap.state == "succeeded"
    events = _map_events(redis_client, snap.run_id, "square")
    in_flight = [int(e["queued"]) + int(e["running"]) for e in events]
    assert len(events) >= 300  # one per settled chunk, after the next ones were dispatched
    assert max(in_flight) == 5, Counter(in_flight)  # reached, never exceeded


def test_a_run_submitted_during_a_big_map_starts_promptly(client: Client, redis_client: redis.Redis) -> None:
    """A 2,000-chunk map holds at most max_in_flight messages on the broker: a run submitted behind it
    starts within a second, not after the map."""
    big = client.submit(_map_pipeline(2000, name="big", max_in_flight=16, params={"sleep_s": 0.01}))
    deadline = time.monotonic() + 30
    while client.status(big).maps.get("square", {}).get("succeeded", 0) < 50:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = client.store.now()
    small = client.submit(Pipeline("small").add_task(quick))
    snap = client.wait(small, timeout_s=30, poll_s=0.05)
    started = float(snap.times["quick:started"]) - t0
    big_snap = client.status(big)
    assert snap.state == "succeeded"
    assert started < 1.0, started
    assert big_snap.state == "running" and big_snap.maps["square"]["succeeded"] < 2000  # it really was behind
    assert client.wait(big, timeout_s=120).state == "succeeded"


def test_map_after_map_streams_chunk_by_chunk(client: Client, redis_client: redis.Redis, tmp_path: Path) -> None:
    """square -> plus_one over the same chunks: chunk i's second step starts before the first map ends."""
    p = (
        Pipeline("stream")
        .add_task(span, params={"n": 40})
        .add_map(square, over="span", max_in_flight=4, params={"sleep_s": 0.05})
        .add_map(plus_one, over="square", max_in_flight=4)
        .add_task(total_after, depends_on=["plus_one"])
    )
    snap = run_to_end(client, p, timeout_s=60)
    assert snap.state == "succeeded", snap.errors
    assert client.results(snap.run_id)["total_after"] == {"sum": sum(i * i + 1 for i in range(40)), "n": 40}
    io = run_keys(snap.run_id).chunk_io
    first_map_end = float(snap.times["square:finished"])
    second_starts = [float(redis_client.hget(io, f"plus_one[{i}]:t:started")) for i in range(40)]
    assert sum(t < first_map_end for t in second_starts) >= 30, "the second map waited for the first"
    assert float(snap.times["plus_one:finished"]) >= first_map_end


def test_one_failed_chunk_fails_the_map_by_default(client: Client) -> None:
    snap = run_to_end(client, _map_pipeline(20, max_in_flight=20, params={"fail_on": [3]}))
    assert snap.state == "failed"
    assert snap.states["square"] == "failed" and snap.states["total"] == "upstream_failed"
    error = json.loads(snap.errors["square"])
    assert error["type"] == "MapFailed" and "1 of 20 chunks failed" in error["message"]
    assert snap.maps["square"]["failed"] == 1 and snap.maps["square"]["succeeded"] == 19


def test_allow_failed_lets_the_map_succeed_and_the_reduce_sees_the_failures(client: Client) -> None:
    snap = run_to_end(client, _map_pipeline(20, allow_failed=0.1, params={"fail_on": [3, 7]}))
    assert snap.state == "succeeded", snap.errors
    result = client.results(snap.run_id)["total"]
    assert result["failed"] == [3, 7] and result["n"] == 18
    assert result["sum"] == sum(i * i for i in range(20) if i not in (3, 7))
    # one more failure than allowed fails it
    snap = run_to_end(client, _map_pipeline(20, allow_failed=1, params={"fail_on": [3, 7]}))
    assert snap.state == "failed" and "2 of 20 chunks failed (allow_failed: 1)" in snap.errors["square"]


def test_retry_reruns_only_the_failed_chunks(client: Client, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    bad = tmp_path / "bad-{}"
    for i in (2, 5):
        Path(str(bad).format(i)).touch()
    p = _map_pipeline(12, max_in_flight=12, params={"log": str(log), "fail_while": str(bad)})
    snap = run_to_end(client, p)
    assert snap.state == "failed" and snap.maps["square"]["failed"] == 2
    for i in (2, 5):
        Path(str(bad).format(i)).unlink()
    assert client.retry(snap.run_id) >= 2
    snap = client.wait(snap.run_id, timeout_s=60, poll_s=0.05)
    assert snap.state == "succeeded", snap.errors
    calls = _log(log)
    assert calls == Counter({f"square {i}": (2 if i in (2, 5) else 1) for i in range(12)})
    assert client.results(snap.run_id)["total"]["sum"] == sum(i * i for i in range(12))


def test_cancel_stops_queued_and_running_chunks(client: Client, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    run_id = client.submit(_map_pipeline(200, max_in_flight=4, params={"log": str(log), "sleep_s": 0.3}))
    deadline = time.monotonic() + 30
    while client.status(run_id).maps.get("square", {}).get("succeeded", 0) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    assert client.cancel(run_id) == "cancelled"
    snap = client.wait(run_id, timeout_s=10)
    assert snap.state == "cancelled" and time.monotonic() - t0 < 2
    assert snap.states["square"] == "cancelled" and snap.states["total"] == "cancelled"
    started = sum(_log(log).values())
    time.sleep(1.0)  # longer than a chunk: nothing more starts
    assert sum(_log(log).values()) == started < 20


def _largest_message(redis_client: redis.Redis, client: Client, width: int) -> tuple[int, str]:
    p = Pipeline(f"msg{width}").add_task(span, params={"n": width}).add_map(square_elsewhere, over="span",
                                                                            max_in_flight=width)  # fmt: skip
    run_id = client.submit(p)
    deadline = time.monotonic() + 60
    while redis_client.llen("map-nowhere") < width:
        assert time.monotonic() < deadline, redis_client.llen("map-nowhere")
        time.sleep(0.05)
    msgs = redis_client.lrange("map-nowhere", 0, -1)
    client.cancel(run_id)
    redis_client.delete("map-nowhere")
    biggest = max(msgs, key=len)
    return len(biggest), biggest


def test_largest_message_does_not_grow_with_the_number_of_chunks(client: Client, redis_client: redis.Redis) -> None:
    """Messages carry ids, never the elements: 10 vs 10,000 chunks differ only by the digits of the index."""
    size10, msg10 = _largest_message(redis_client, client, 10)
    size10k, msg10k = _largest_message(redis_client, client, 10_000)

    def normalised(msg: str) -> str:  # the chunk index, the dispatch counter and the run id are not sizes
        return re.sub(r"\d{8}-\d{6}-[0-9a-f]{6}", "RUN", re.sub(r"\[\d+\]", "[i]", re.sub(r"\]\.\d+", "].n", msg)))

    assert len(normalised(msg10)) == len(normalised(msg10k))
    assert size10k - size10 <= 40, (size10, size10k)  # a few more digits; the 10,000 elements are not in it


def test_each_chunk_is_cached_by_its_own_elements(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With the cache on, a re-run whose input changed in one element re-runs that chunk alone."""
    cached = Client(settings.model_copy(update={"use_cache": True}))
    log = tmp_path / "calls.log"
    factor = int(time.time() * 1000) % 100_000 + 2  # fingerprints no earlier session has seen

    def pipeline(bump: int | None) -> Pipeline:
        return (
            Pipeline("chunk-cache")
            .add_task(span, params={"n": 10, "bump": bump})
            .add_map(square, over="span", params={"log": str(log), "factor": factor})
            .add_task(total, depends_on=["square"])
        )

    first = run_to_end(cached, pipeline(None))
    assert first.state == "succeeded" and sum(_log(log).values()) == 10
    second = run_to_end(cached, pipeline(4))
    assert second.state == "succeeded"
    assert _log(log) == Counter({**{f"square {i}": 1 for i in range(10)}, "square 1004": 1})
    assert cached.results(second.run_id)["total"]["sum"] == factor * sum(
        (i + 1000 if i == 4 else i) ** 2 for i in range(10)
    )
    outcomes = Counter(e["outcome"] for e in cached.store.attempt_log(second.run_id) if e["task"].startswith("square["))
    assert outcomes == Counter({"cached": 9, "succeeded": 1})


def test_a_failure_allowed_in_the_first_map_is_a_missing_element_for_the_next(client: Client, tmp_path: Path) -> None:
    """square may lose one chunk; plus_one's chunk for it is upstream_failed, which does not count against
    plus_one's own allowance. Then plus_one fails on its own, and a retry re-runs just that chunk."""
    bad = tmp_path / "bad-{}"
    Path(str(bad).format(16)).touch()  # plus_one fails on 4*4
    p = (
        Pipeline("stream-fail")
        .add_task(span, params={"n": 9})
        .add_map(square, over="span", allow_failed=1, params={"fail_on": [0]})
        .add_map(plus_one, over="square", params={"fail_while": str(bad)})
        .add_task(total_after, depends_on=["plus_one"])
    )
    snap = run_to_end(client, p)
    assert snap.state == "failed" and snap.states["square"] == "succeeded" and snap.states["plus_one"] == "failed"
    assert "1 of 9 chunks failed (allow_failed: 0)" in snap.errors["plus_one"]
    Path(str(bad).format(16)).unlink()
    assert client.retry(snap.run_id) >= 2
    snap = client.wait(snap.run_id, timeout_s=30, poll_s=0.05)
    assert snap.state == "succeeded", (snap.states, snap.maps)
    assert snap.maps["plus_one"] == {**snap.maps["plus_one"], "succeeded": 8, "failed": 1, "pending": 0}
    assert client.results(snap.run_id)["total_after"] == {"sum": sum(i * i + 1 for i in range(1, 9)), "n": 8}


def test_a_chunk_cache_entry_depends_on_the_maps_other_parents(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cached = Client(settings.model_copy(update={"use_cache": True}))
    log = tmp_path / "calls.log"
    n = int(time.time() * 1000) % 100_000 + 5  # elements no earlier session has cached

    def pipeline(value: int) -> Pipeline:
        return (
            Pipeline("chunk-cache-parents")
            .add_task(span, params={"n": n})
            .add_task(offset, params={"value": value})
            .add_map(add_offset, over="span", depends_on=["offset"], params={"log": str(log)}, batch_size=n)
        )

    assert run_to_end(cached, pipeline(1)).state == "succeeded"
    assert run_to_end(cached, pipeline(1)).state == "succeeded"  # all cached: no call
    assert sum(_log(log).values()) == n
    snap = run_to_end(cached, pipeline(2))  # the other parent changed: the chunk runs again
    assert sum(_log(log).values()) == 2 * n
    assert cached.store.chunk_rows(snap.run_id, "add_offset", 0, 1)[0][1] == json.dumps(
        [i + 2 for i in range(n)], separators=(",", ":"))
