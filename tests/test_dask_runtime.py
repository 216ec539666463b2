"""The runtime on real Dask worker processes (LocalCluster): plugin, tags, keys, plan switch."""

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream
from helpers import items_for

import workloads
from mcdask.commands import check_against_reference, stream_through
from mcdask.errors import DeploymentError
from mcdask.model.plan import Plan, Shard, Stage
from mcdask.runtime.deploy import DaskRunner, deploy, release
from mcdask.runtime.plugin import PLUGIN_NAME
from mcdask.runtime.weights import WeightsSource
from mcdask.streaming.records import Item
from mcdask.streaming.stream import Stream

pytestmark = pytest.mark.slow

ALEX_A = Plan("alexnet", ("a", "b", "c", "d"), (
    Stage(0, 9, (Shard(None, ("a", "b")),)),
    Stage(9, 10, (Shard((0, 1500), ("c",)), Shard((1500, 4096), ("d",)))),
    Stage(10, 12, (Shard((0, 600), ("c",)), Shard((600, 1000), ("d",)))),
))
ALEX_B = Plan("alexnet", ("a", "b", "c"), (
    Stage(0, 5, (Shard(None, ("a",)),)),
    Stage(5, 10, (Shard(None, ("b", "c")),)),
    Stage(10, 12, (Shard(None, ("c",)),)),
))


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"mcdask.worker.intra-op-threads": 1}), \
            LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


def _stream(client, plan, items):
    return stream_through(client, plan, items, WeightsSource(), None, None, False, keep="outputs")


def test_split_plan_equals_unsplit_and_keys_name_stages(client):
    w = workloads.get("alexnet")
    items = items_for(w, 12)
    with get_task_stream(client) as ts:
        records, summary = _stream(client, ALEX_A, items)
    check = check_against_reference(w, items, records, WeightsSource())
    assert check["equal"], check
    assert [r.frame for r in records] == list(range(12))
    prefixes = {rec["key"][0] if isinstance(rec["key"], tuple) else rec["key"] for rec in ts.data}
    assert {"conv1..flatten", "fc1[0:1500]", "fc1[1500:4096]", "fc2..fc3[0:600]", "fc2..fc3[600:1000]"} <= prefixes
    frames = {rec["key"][2] for rec in ts.data if isinstance(rec["key"], tuple)}
    assert frames == set(range(12))
    # activations travel worker to worker: transfers name a worker as their source
    sources = {ss.get("source") for rec in ts.data for ss in rec["startstops"] if ss["action"] == "transfer"}
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    assert sources and sources <= workers


def test_pieces_run_only_on_their_holders(client):
    w = workloads.get("alexnet")
    dep = deploy(client, ALEX_A)
    by_name = {str(i["name"]): a for a, i in client.scheduler_info(n_workers=-1)["workers"].items()}
    with get_task_stream(client) as ts:
        list(Stream(DaskRunner(client, dep), ALEX_A, w).run(items_for(w, 8)))
    holders = {"conv1..flatten": {dep.binding["a"], dep.binding["b"]},
               "fc1[0:1500]": {dep.binding["c"]}, "fc1[1500:4096]": {dep.binding["d"]}}
    for rec in ts.data:
        label = rec["key"][0]
        if label in holders:
            assert rec["worker"] in {by_name[n] for n in holders[label]}, (label, rec["worker"])
    conv_workers = {rec["worker"] for rec in ts.data if rec["key"][0] == "conv1..flatten"}
    assert len(conv_workers) == 2, "both conv replicas should take frames"


def test_switch_plan_without_restarting(client):
    w = workloads.get("alexnet")
    items = items_for(w, 6)
    deploy(client, ALEX_A)
    records, _ = _stream(client, ALEX_B, items)
    assert check_against_reference(w, items, records, WeightsSource())["equal"]
    # the old plan's tags are withdrawn, the new ones declared
    res = client.run(lambda dask_worker: dict(dask_worker.state.total_resources))
    tags = {k for r in res.values() for k, v in r.items() if v > 0}
    assert all(ALEX_B.id in t for t in tags) and tags
    held = client.run(lambda dask_worker: sorted(dask_worker.plugins[PLUGIN_NAME].slices))
    assert sum(len(v) for v in held.values()) == 4   # 1 + 2 replicas + 1


def _hold_weakrefs(dask_worker):
    """Weak references to every slice this worker holds now (kept on the worker for later)."""
    import weakref

    plugin = dask_worker.plugins[PLUGIN_NAME]
    dask_worker._mcdask_test_refs = [weakref.ref(s) for s in plugin.slices.values()]
    return len(dask_worker._mcdask_test_refs)


def _count_alive_when_building(dask_worker, backend):
    """Make this worker record, when it constructs its next slice (a ``Slice`` on tensorflow, a
    ``litert.load`` on litert), how many of the slices it held (``_hold_weakrefs``) are still alive."""
    import gc

    from mcdask.runtime import litert, slices

    module, name = (slices, "Slice") if backend == "tensorflow" else (litert, "load")
    original = getattr(module, name)

    def recording(*args, **kwargs):
        setattr(module, name, original)
        gc.collect()
        dask_worker._mcdask_test_alive = sum(r() is not None for r in dask_worker._mcdask_test_refs)
        return original(*args, **kwargs)

    setattr(module, name, recording)


@pytest.mark.parametrize("backend", ["litert", "tensorflow"])
def test_a_plan_switch_frees_the_old_plans_slices_before_building(client, backend):
    """A 1 GB device cannot hold two plans' weights: when a switch starts building the new
    plan's slices, no slice of the old plan (that the new one does not reuse) is alive."""
    deploy(client, ALEX_A, backend=backend)
    held = client.run(_hold_weakrefs)
    assert sum(held.values()) == 6   # 2 conv replicas + 2 fc1 shards + 2 fc2..fc3 shards
    client.run(_count_alive_when_building, backend=backend)
    deploy(client, ALEX_B, backend=backend)           # shares no slice with ALEX_A
    alive = client.run(lambda dask_worker: getattr(dask_worker, "_mcdask_test_alive", None))
    assert [n for n in alive.values() if n is not None] and sum(n or 0 for n in alive.values()) == 0, alive


def test_release_lets_go_of_every_slice_tag_and_their_memory(client):
    """``release``: every worker drops its slices and tags and gives their heap back (the bench
    releases between rows, so each row's peak is its own plan's); a deploy after it builds anew."""
    w = workloads.get("alexnet")
    deploy(client, ALEX_A)
    held = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].status()["param_bytes"])
    rss = client.run(lambda: __import__("psutil").Process().memory_info().rss)
    after = release(client)
    names = {a: str(i["name"]) for a, i in client.scheduler_info(n_workers=-1)["workers"].items()}
    assert sorted(after) == sorted(names.values())
    assert client.run(lambda dask_worker: sorted(dask_worker.plugins[PLUGIN_NAME].slices)) == {a: [] for a in names}
    tags = client.run(lambda dask_worker: [t for t, v in dask_worker.state.total_resources.items()
                                           if t.startswith("mcdask-") and v > 0])
    assert not any(tags.values()), tags
    for a, name in names.items():   # each gives back at least 80 % of its weights (AlexNet's fc: 100+ MB)
        assert rss[a] - after[name] >= 0.8 * held[a], (name, rss[a], after[name], held[a])
    records, _ = _stream(client, ALEX_A, items_for(w, 4))
    assert check_against_reference(w, items_for(w, 4), records, WeightsSource())["equal"]


def test_restarted_worker_rebuilds_before_taking_tasks(client):
    w = workloads.get("alexnet")
    dep = deploy(client, ALEX_A)
    addr = {str(i["name"]): a for a, i in client.scheduler_info(n_workers=-1)["workers"].items()}[dep.binding["c"]]
    client.restart_workers([addr])
    client.wait_for_workers(4)
    items = items_for(w, 6)
    records = list(Stream(DaskRunner(client, dep), ALEX_A, w).run(items))
    assert [r.status for r in records] == ["ok"] * 6
    assert check_against_reference(w, items, records, WeightsSource())["equal"]


def test_bad_frames_get_error_records_and_the_stream_goes_on(client):
    w = workloads.get("alexnet")
    items = items_for(w, 6)
    bad_shape = Item(100, {"frame": np.zeros((1, 100, 100, 3), np.uint8)})
    nan = Item(101, {"frame": np.full((1, 220, 220, 3), np.nan, np.float32)})
    bad_dtype = Item(102, {"frame": np.zeros((1, 220, 220, 3), np.int64)})
    mixed = items[:2] + [bad_shape, nan] + items[2:4] + [bad_dtype] + items[4:]
    records, _ = _stream(client, ALEX_B, mixed)
    assert [r.frame for r in records] == [0, 1, 100, 101, 2, 3, 102, 4, 5]
    errs = {r.frame: r.error for r in records if r.status == "error"}
    assert "shape (1, 100, 100, 3), expected (220, 220, 3)" in errs[100]
    assert "NaN" in errs[101]
    assert "dtype int64" in errs[102]
    good = [r for r in records if r.status == "ok"]
    assert len(good) == 6
    assert check_against_reference(w, items, good, WeightsSource())["equal"]


def test_plan_too_big_for_cluster_is_refused(client):
    big = Plan("alexnet", tuple(f"x{i}" for i in range(9)), (
        Stage(0, 9, (Shard(None, tuple(f"x{i}" for i in range(8))),)),
        Stage(9, 12, (Shard(None, ("x8",)),))))
    with pytest.raises(DeploymentError, match="plan needs 9 devices, the cluster has 4 workers"):
        deploy(client, big)


@pytest.mark.parametrize("name,frames", [("vgg16", 3), ("action", 38)])
def test_other_workloads_on_dask(client, name, frames):
    from mcdask.model.kinds import device_names
    from mcdask.streaming.controller import plan_book

    w = workloads.get(name)
    # the paper's TensorFlow 1.5 memory puts either model on 4 devices (TensorFlow 2's needs 5)
    plan = plan_book(w, None, runtime="tf1.5").plan_for(device_names("pi3", 4))
    items = items_for(w, frames)
    # on TensorFlow, the runtime of the unsplit reference: VGG16 on LiteRT's XNNPACK kernels reads
    # 1.2e-5 of the output's scale off TensorFlow's own whole model, past the 1e-5 bar of `--check`
    with dask.config.set({"mcdask.worker.backend": "tensorflow"}):
        records, summary = _stream(client, plan, items)
    check = check_against_reference(w, items, records, WeightsSource())
    assert check["checked"] >= 3 and check["equal"], check
