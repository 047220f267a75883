import pytest
from orchestrator import Pipeline
from tests.conftest import run_to_end
from tests.map_tasks import span, square, total, plus_one, total_after

pytestmark = pytest.mark.usefixtures("worker")

@pytest.mark.parametrize("n", [0, 1, 7])
def test_smoke(client, n):
    p = (Pipeline("m").add_task(span, params={"n": n}).add_map(square, over="span", max_in_flight=3)
         .add_task(total, depends_on=["square"]))
    snap = run_to_end(client, p, 30)
    print(snap.states, snap.maps, snap.errors)
    assert snap.state == "succeeded"
    r = client.results(snap.run_id)
    assert r["total"]["sum"] == sum(i*i for i in range(n))

def test_stream(client):
    p = (Pipeline("m2").add_task(span, params={"n": 9}).add_map(square, over="span", batch_size=2)
         .add_map(plus_one, over="square").add_task(total_after, depends_on=["plus_one"]))
    snap = run_to_end(client, p, 30)
    print(snap.states, snap.maps, snap.errors)
    assert snap.state == "succeeded"
    assert client.results(snap.run_id)["total_after"] == {"sum": sum(i*i+1 for i in range(9)), "n": 9}
