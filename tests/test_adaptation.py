"""Musical chairs on stock `dask scheduler` / `dask worker` processes (no root needed): the
stream keeps going while a device dies, freezes or joins, and stops cleanly when the scheduler
dies. Every frame comes out once, in order, equal to the unsplit model."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from distributed import Client
from helpers import items_for
from stock import BIN, StockCluster

import workloads
from mcdask.commands import check_against_reference, plan_book, stream_through
from mcdask.model.plan import Plan, Shard, Stage
from mcdask.runtime.weights import WeightsSource

pytestmark = pytest.mark.slow
W = workloads.get("alexnet")


@pytest.fixture
def cluster(tmp_path):
    c = StockCluster(tmp_path)
    c.start_scheduler()
    yield c
    assert not c.close(), "processes left behind"


def paced(items, every_s: float, at: dict):
    """Yield ``items`` ``every_s`` apart; before item k, call ``at[k]()`` (a fault)."""
    for item in items:
        if item.frame in at:
            at[item.frame]()
        time.sleep(every_s)
        yield item


def stream(cluster, plan, items, **kw):
    with Client(cluster.address, timeout="30s") as client:
        records, summary = stream_through(client, plan, items, WeightsSource(), 8, None, False,
                                          plans=plan_book(W, None), keep="outputs", **kw)
    return records, summary


def assert_every_frame_once_and_equal(records, items, n):
    assert [r.frame for r in records] == list(range(n))
    assert [r.status for r in records] == ["ok"] * n, [r.error for r in records if r.error]
    check = check_against_reference(W, items, records, WeightsSource())
    assert check["equal"] and check["checked"] == n, check


def kinds(summary):
    return [(e["kind"], e.get("device")) for e in summary["events"]]


def test_losing_the_only_holder_of_a_shard_moves_to_the_plan_for_the_rest(cluster):
    home = Plan("alexnet", ("w0", "w1", "w2", "w3"), (
        Stage(0, 9, (Shard(None, ("w0", "w1")),)),
        Stage(9, 10, (Shard((0, 2048), ("w2",)), Shard((2048, 4096), ("w3",)))),
        Stage(10, 12, (Shard(None, ("w3",)),)),
    ))
    for name in home.devices:
        cluster.start_worker(name)
    cluster.wait_for(set(home.devices))
    items = items_for(W, 60)
    records, summary = stream(cluster, home, paced(items, 0.02, {20: lambda: cluster.signal("w2", signal.SIGKILL)}))
    assert_every_frame_once_and_equal(records, items, 60)
    assert ("lost", "w2") in kinds(summary) and summary["switches"] == 1
    switched = next(e for e in summary["events"] if e["kind"] == "switched")
    assert sorted(switched["devices"]) == ["w0", "w1", "w3"]
    assert records[-1].plan_id == switched["plan"] != home.id
    assert any(r.attempts > 1 for r in records[20:])     # frames in flight on w2 were resubmitted


def test_a_frozen_device_is_left_out_and_gets_its_role_back_when_it_thaws(cluster):
    home = Plan("alexnet", ("w0", "w1", "w2"), (
        Stage(0, 9, (Shard(None, ("w0", "w1")),)),
        Stage(9, 12, (Shard(None, ("w2",)),)),
    ))
    for name in home.devices:
        cluster.start_worker(name)
    cluster.wait_for(set(home.devices))
    stopped = {}

    def freeze():
        cluster.signal("w0", signal.SIGSTOP)
        stopped["t"] = time.monotonic()

    def thaw():
        cluster.signal("w0", signal.SIGCONT)

    items = items_for(W, 160)
    records, summary = stream(cluster, home, paced(items, 0.05, {10: freeze, 90: thaw}))
    assert_every_frame_once_and_equal(records, items, 160)
    seen = kinds(summary)
    assert seen.index(("frozen", "w0")) < seen.index(("back", "w0"))
    switches = [e for e in summary["events"] if e["kind"] == "switched"]
    assert sorted(switches[0]["devices"]) == ["w1", "w2"]
    assert switches[-1]["plan"] == home.id and records[-1].plan_id == home.id   # its old role
    frozen_at = next(e["t_s"] for e in summary["events"] if e["kind"] == "frozen")
    assert frozen_at > 0


def test_joining_devices_grow_the_deployment(cluster):
    for name in ("w0", "w1"):
        cluster.start_worker(name)
    cluster.wait_for({"w0", "w1"})

    def join():
        cluster.start_worker("w2")
        cluster.start_worker("w3")
        cluster.wait_for({"w2", "w3"})

    start = plan_book(W, None).plan_for(("w0", "w1"))
    items = items_for(W, 80)
    records, summary = stream(cluster, start, paced(items, 0.05, {10: join}))
    assert_every_frame_once_and_equal(records, items, 80)
    assert {("joined", "w2"), ("joined", "w3")} <= set(kinds(summary))
    last = [e for e in summary["events"] if e["kind"] == "switched"][-1]
    assert sorted(last["devices"]) == ["w0", "w1", "w2", "w3"]
    assert records[-1].plan_id == last["plan"]


def test_losing_the_scheduler_stops_with_one_line_a_complete_out_file_and_exit_3(cluster, tmp_path):
    for name in ("w0", "w1"):
        cluster.start_worker(name)
    cluster.wait_for({"w0", "w1"})
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen([str(BIN / "mcdask"), "run", "--scheduler", cluster.address, "--workload", "alexnet",
                             "--frames", "100000", "--out", str(out), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not out.exists() or len(out.read_text().splitlines()) < 20:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the stream did not answer 20 frames within 180 s"
        time.sleep(0.2)
    cluster.signal("scheduler", signal.SIGKILL)
    killed = time.monotonic()
    stdout, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - killed < 35
    assert proc.returncode == 3, stderr[-2000:]
    assert f"lost the scheduler at {cluster.address}" in stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(len(lines)))
    answered = [x for x in lines if x["status"] == "ok"]
    assert len(answered) >= 20 and lines[:len(answered)] == answered   # complete up to the last answer
    rest = lines[len(answered):]                                     # then the frames in flight, said so
    assert all(x["status"] == "error" and "not answered: lost the scheduler" in x["error"] for x in rest), rest
    assert summary["stopped"].startswith("lost the scheduler") and summary["classified"] == len(answered)
