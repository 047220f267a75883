"""C5 with a real Redis and real workers: cached nodes, what re-runs, resume, missing artifacts.

Executions are counted by side effect: every run of a task appends its node name to a log file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import redis

from orchestrator import Pipeline
from orchestrator.client import Client
from orchestrator.errors import ChordflowError, PipelineInvalid
from orchestrator.keys import cache_entry, run_keys
from orchestrator.settings import Settings
from orchestrator.spec import spec_of
from orchestrator.store import RunSnapshot
from tests.cache_tasks import side_effect, step

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def cclient(settings: Settings) -> Client:
    return Client(settings.model_copy(update={"use_cache": True}))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {"log": tmp_path / "executions.log", "A": tmp_path / "a.csv", "B": tmp_path / "b.csv"}
    out["A"].write_text("alpha\n")
    out["B"].write_text("beta\n")
    out["log"].write_text("")
    return out


def diamond(files: dict[str, Path], name: str, c_value: int = 3, a_spec=step) -> Pipeline:
    """a(A), b(B) -> c(a), d(a, b) -> e(c, d)."""
    log = str(files["log"])
    return (
        Pipeline(name)
        .add_task(a_spec, name="a", params={"log": log, "value": 1, "data": str(files["A"])})
        .add_task(step, name="b", params={"log": log, "value": 2, "data": str(files["B"])})
        .add_task(step, name="c", depends_on=["a"], params={"log": log, "value": c_value})
        .add_task(step, name="d", depends_on=["a", "b"], params={"log": log, "value": 4})
        .add_task(step, name="e", depends_on=["c", "d"], params={"log": log, "value": 5})
    )


def executed(files: dict[str, Path]) -> list[str]:
    """Nodes run since the last call (and forget them)."""
    names = files["log"].read_text().split()
    files["log"].write_text("")
    return sorted(names)


def run(client: Client, pipeline: Pipeline, r: redis.Redis, **options) -> RunSnapshot:
    run_id = client.submit(pipeline, **options)
    snap = client.wait(run_id, timeout_s=60, poll_s=0.05)
    assert snap.finished, snap.states
    wait_indexed(r, snap)
    return snap


def wait_indexed(r: redis.Redis, snap: RunSnapshot, timeout_s: float = 10) -> None:
    """Cache entries are written a moment after a node settles (after its artifacts): wait for them."""
    ran = [n for n, st in snap.states.items() if st == "succeeded"]
    if not ran:
        return
    records = {n: json.loads(x) for n, x in zip(ran, r.hmget(run_keys(snap.run_id).nodes, ran), strict=True)}
    want = [cache_entry(rec["fp"]) for rec in records.values() if rec.get("cache", True)]
    deadline = time.monotonic() + timeout_s
    while want and r.exists(*want) < len(want):
        assert time.monotonic() < deadline, "cache entries were not written"
        time.sleep(0.02)


def test_second_identical_run_is_all_cached_and_runs_nothing(cclient: Client, redis_client, files) -> None:
    first = run(cclient, diamond(files, "cache_same"), redis_client)
    assert first.state == "succeeded" and executed(files) == ["a", "b", "c", "d", "e"]
    second = run(cclient, diamond(files, "cache_same"), redis_client)
    assert second.state == "succeeded"
    assert set(second.states.values()) == {"cached"}
    assert executed(files) == []
    assert cclient.results(second.run_id) == cclient.results(first.run_id)
    assert second.hosts["e"] == f"cache of {first.run_id}"


def test_touching_one_input_file_reruns_exactly_its_descendants(cclient: Client, redis_client, files) -> None:
    run(cclient, diamond(files, "cache_touch"), redis_client)
    executed(files)
    files["B"].write_text("beta, changed\n")
    snap = run(cclient, diamond(files, "cache_touch"), redis_client)
    assert executed(files) == ["b", "d", "e"]
    assert {n for n, s in snap.states.items() if s == "cached"} == {"a", "c"}
    assert cclient.results(snap.run_id)["b"] == 2 + len("beta, changed\n")


def test_param_change_version_bump_and_force_task_rerun_the_right_set(cclient: Client, redis_client, files) -> None:
    run(cclient, diamond(files, "cache_change"), redis_client)
    executed(files)
    run(cclient, diamond(files, "cache_change", c_value=30), redis_client)
    assert executed(files) == ["c", "e"]
    bumped = dataclasses.replace(spec_of(step), version="2")
    run(cclient, diamond(files, "cache_change", c_value=30, a_spec=bumped), redis_client)
    assert executed(files) == ["a", "c", "d", "e"]
    run(cclient, diamond(files, "cache_change", c_value=30, a_spec=bumped), redis_client, force_tasks=["d"])
    assert executed(files) == ["d", "e"]
    run(cclient, diamond(files, "cache_change", c_value=30, a_spec=bumped), redis_client, force=True)
    assert executed(files) == ["a", "b", "c", "d", "e"]


def test_uncacheable_task_always_runs_and_so_do_its_descendants(cclient: Client, redis_client, files) -> None:
    log = str(files["log"])
    p = (Pipeline("cache_side").add_task(step, name="a", params={"log": log})
         .add_task(side_effect, name="mail", depends_on=["a"], params={"log": log})
         .add_task(step, name="after", depends_on=["mail"], params={"log": log}))  # fmt: skip
    run(cclient, p, redis_client)
    executed(files)
    snap = run(cclient, p, redis_client)
    assert executed(files) == ["after", "mail"] and snap.states["a"] == "cached"


def test_resume_from_after_a_failure_reruns_the_failed_task_and_descendants(
    cclient: Client, redis_client, files, tmp_path: Path
) -> None:
    flag = tmp_path / "broken"
    flag.write_text("")
    p = diamond(files, "cache_resume").with_params({"d": {"fail_if": str(flag)}})
    failed = run(cclient, p, redis_client)
    assert failed.state == "failed" and failed.states["d"] == "failed"
    executed(files)
    flag.unlink()
    # the cache alone would also reuse a, b, c; --resume-from names the source run's results explicitly
    with pytest.raises(ChordflowError, match="no result for"):
        cclient.submit(p, resume_from="e", from_run=failed.run_id)  # d has no result in that run
    snap = run(cclient, p, redis_client, resume_from="d", from_run=failed.run_id)
    assert snap.state == "succeeded" and executed(files) == ["d", "e"]
    assert {n for n, s in snap.states.items() if s == "cached"} == {"a", "b", "c"}
    assert snap.hosts["a"] == f"cache of {failed.run_id}"
    # without --from-run: the latest finished run of the pipeline that has the results
    snap = run(cclient, p, redis_client, resume_from="c")
    assert snap.state == "succeeded" and executed(files) == ["c", "e"]


def test_cache_entry_whose_artifacts_are_gone_is_recomputed(
    cclient: Client, redis_client, files, artifact_root: Path
) -> None:
    first = run(cclient, diamond(files, "cache_gone"), redis_client)
    executed(files)
    shutil.rmtree(artifact_root / "cache_gone" / "c" / "v1" / first.run_id)
    snap = run(cclient, diamond(files, "cache_gone"), redis_client)
    assert snap.state == "succeeded" and executed(files) == ["c", "e"]


def test_unhashable_param_is_a_clear_error_at_submit(cclient: Client, files) -> None:
    p = Pipeline("cache_nan").add_task(step, name="a", params={"log": str(files["log"]), "value": 1})
    p.nodes[0].params["data"] = str(files["A"].with_name("missing.csv"))
    with pytest.raises(PipelineInvalid, match=r"task 'a': field 'params.data'.*missing.csv"):
        cclient.submit(p)
    assert executed(files) == []


def test_two_concurrent_identical_runs_are_both_correct(cclient: Client, redis_client, files) -> None:
    files["A"].write_text(f"concurrent {time.time()}\n")  # a fresh fingerprint
    out: list[RunSnapshot] = []
    threads = [threading.Thread(target=lambda: out.append(run(cclient, diamond(files, "cache_twin"), redis_client)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert [s.state for s in out] == ["succeeded", "succeeded"]
    assert cclient.results(out[0].run_id) == cclient.results(out[1].run_id)
    third = run(cclient, diamond(files, "cache_twin"), redis_client)
    assert set(third.states.values()) == {"cached"}
