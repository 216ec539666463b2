"""The cost model on hand-made workloads and profiles with answers worked out by hand."""

from dataclasses import replace

import pytest

import workloads
from mcdask import plans
from mcdask.errors import PlanError, ProfileError
from mcdask.model.kinds import homogeneous
from mcdask.model.plan import Plan, Shard, Stage
from mcdask.model.profile import RUNTIME_COSTS, Device, DeviceKind, LinkModel, Profile
from mcdask.planning.batching import batch_cost
from mcdask.planning.costmodel import evaluate
from mcdask.planning.pieces import piece_memory_bytes, shard_units
from workloads.spec import Builder

# conv (4x4x1 -> 4x4x1) -> flatten 16 -> dense 8 -> dense 2 softmax
_b = Builder({"frame": (4, 4, 1)})
_x = _b.conv("c1", "frame", 1, 3)
_x = _b.flatten("flat", _x)
_x = _b.dense("d1", _x, 8)
_b.dense("d2", _x, 2, activation="softmax")
TINY = _b.workload("tiny", 2, "test chain")

TIMES = {"c1": 1.0, "flat": 0.0, "d1": 2.0, "d2": 0.5}
LINK = LinkModel(latency_s=0.1, bandwidth_Bps=1000.0)
FRAME = 0.1 + 16 / 1000          # 4*4*1 uint8
RESULT = 0.1 + 8 / 1000          # 2 float32
FLAT = 0.1 + 64 / 1000           # 16 float32


def toy_kind(name="slow", scale=1.0, memory=10**6, baseline=1000) -> DeviceKind:
    return DeviceKind(kind=name, memory_bytes=memory, baseline_bytes=baseline,
                      layer_time_s={"tiny": {k: v * scale for k, v in TIMES.items()}})


def toy_profile(*devs, kinds=None) -> Profile:
    kinds = kinds or {"slow": toy_kind()}
    return Profile(kinds, tuple(Device(n, k) for n, k in devs), LINK)


def whole(a, b, *devs):
    return Stage(a, b, (Shard(None, tuple(devs)),))


def test_single_device():
    prof = toy_profile(("a", "slow"))
    c = evaluate(TINY, Plan("tiny", ("a",), (whole(0, 4, "a"),)), prof)
    assert c.ips == pytest.approx(1 / 3.5)
    assert c.latency_s == pytest.approx(FRAME + 3.5 + RESULT)
    assert c.bottleneck.startswith("compute a")
    assert c.busy_s["client link (client: frames out, results in)"] == pytest.approx(FRAME + RESULT)


def test_replicas_of_different_speed_add_capacities():
    prof = toy_profile(("a", "slow"), ("b", "fast"), kinds={"slow": toy_kind(), "fast": toy_kind("fast", 0.5)})
    c = evaluate(TINY, Plan("tiny", ("a", "b"), (whole(0, 4, "a", "b"),)), prof)
    assert c.ips == pytest.approx(1 / 3.5 + 1 / 1.75)
    # a takes 1/3 of the frames, b 2/3: expected time 1/3*3.5 + 2/3*1.75
    assert c.latency_s == pytest.approx(FRAME + 3.5 / 3 + 2 * 1.75 / 3 + RESULT)


def test_pipeline_pays_links_in_latency_not_throughput():
    prof = toy_profile(("a", "slow"), ("b", "slow"))
    c = evaluate(TINY, Plan("tiny", ("a", "b"), (whole(0, 2, "a"), whole(2, 4, "b"))), prof)
    assert c.ips == pytest.approx(1 / 2.5)
    assert c.latency_s == pytest.approx(FRAME + 1.0 + FLAT + 2.5 + RESULT)
    assert c.busy_s["link a<->b"] == pytest.approx(FLAT)


def test_model_parallel_costs_slowest_shard_input_copies_and_merge():
    prof = toy_profile(("a", "slow"), ("b", "slow"), ("c", "slow"), ("d", "slow"))
    split = Stage(2, 3, (Shard((0, 4), ("b",)), Shard((4, 8), ("c",))))
    p = Plan("tiny", ("a", "b", "c", "d"), (whole(0, 2, "a"), split, whole(3, 4, "d")))
    c = evaluate(TINY, p, prof)
    half = 2.0 * 4 / 8                      # linear shard time
    part = 0.1 + 4 * 4 / 1000               # each shard sends 4 float32 to the merge
    assert c.busy_s["compute b (d1[0:4])"] == pytest.approx(half)
    assert c.busy_s["link a<->b"] == pytest.approx(FLAT) and c.busy_s["link a<->c"] == pytest.approx(FLAT)
    assert c.busy_s["link b<->d"] == pytest.approx(part)
    assert c.ips == pytest.approx(1 / 1.0)  # a's conv is now the slowest
    assert c.latency_s == pytest.approx(FRAME + 1.0 + FLAT + half + part + 0.5 + RESULT)


def test_device_holding_several_pieces_is_bounded_by_their_sum():
    prof = toy_profile(("a", "slow"), ("b", "slow"))
    p = Plan("tiny", ("a", "b"), (whole(0, 2, "a"), whole(2, 3, "b"), whole(3, 4, "a")))
    c = evaluate(TINY, p, prof)
    assert c.busy_s["compute a (c1..flat, d2)"] == pytest.approx(1.5)
    assert c.ips == pytest.approx(1 / 2.0)
    assert c.memory_bytes["a"] == (1000 + piece_memory_bytes(TINY, prof.kind_of("a"), 0, 2)
                                   + piece_memory_bytes(TINY, prof.kind_of("a"), 3, 4))


def test_memory_is_baseline_weights_and_buffers():
    prof = toy_profile(("a", "slow"))
    k = prof.kind_of("a")
    c = evaluate(TINY, Plan("tiny", ("a",), (whole(0, 4, "a"),)), prof)
    weights = sum(l.param_bytes for l in TINY.layers)
    buffers = 16 * 4 + sum(l.activation_bytes for l in TINY.layers)      # input as float32 + outputs
    assert c.memory_bytes["a"] == 1000 + weights + buffers
    small = toy_profile(("a", "small"), kinds={"small": toy_kind("small", memory=500)})
    over = evaluate(TINY, Plan("tiny", ("a",), (whole(0, 4, "a"),)), small)
    assert not over.fits and over.over_memory == {"a": (1000 + weights + buffers, 500)}
    assert piece_memory_bytes(TINY, k, 2, 3, (0, 4)) == (16 + 1) * 4 * 4 + 16 * 4 + 4 * 4


def test_two_branches_run_side_by_side():
    w = workloads.get("action")
    k = DeviceKind(kind="unit", memory_bytes=10**10, baseline_bytes=0,
                   layer_time_s={"action": {l.name: 1.0 for l in w.layers}})
    prof = Profile({"unit": k}, tuple(Device(n, "unit") for n in "abc"), LINK)
    p = Plan("action", ("a", "b", "c"), (whole(0, 5, "a"), whole(5, 10, "b"), whole(10, 14, "c")))
    c = evaluate(w, p, prof)
    assert c.ips == pytest.approx(1 / 5.0)
    frame, flow = 0.1 + 12 * 16 * 3 / 1000, 0.1 + 12 * 16 * 20 / 1000
    feat = 0.1 + 256 * 4 / 1000
    assert c.latency_s == pytest.approx(max(frame, flow) + 5.0 + feat + 4.0 + 0.1 + 51 * 4 / 1000)
    assert c.busy_s["client link (client: frames out, results in)"] == pytest.approx(frame + flow + 0.1 + 0.204)


def test_windowed_consumer_replicas_receive_every_frame():
    w = workloads.get("action")
    k = DeviceKind(kind="unit", memory_bytes=10**10, baseline_bytes=0,
                   layer_time_s={"action": {l.name: 1.0 for l in w.layers}})
    prof = Profile({"unit": k}, tuple(Device(n, "unit") for n in "abc"), LINK)
    p = Plan("action", ("a", "b", "c"), (whole(0, 10, "a"), whole(10, 14, "b", "c")))
    c = evaluate(w, p, prof)
    feat = 0.1 + 256 * 4 / 1000
    # each pyramid replica needs all 15 (25) frames of its window: both features, every frame
    assert c.busy_s["link a<->b"] == pytest.approx(2 * feat)


def test_the_runtime_costs_its_device_per_task_dependency_and_message():
    w = workloads.get("action")
    k = DeviceKind(kind="unit", memory_bytes=10**10, baseline_bytes=0, runtime_task_s=0.1,
                   runtime_dependency_s=0.001, runtime_receive_s=0.01, runtime_send_s=0.02,
                   layer_time_s={"action": {l.name: 1.0 for l in w.layers}})
    prof = Profile({"unit": k}, tuple(Device(n, "unit") for n in "abc"), LINK)
    p = Plan("action", ("a", "b", "c"), (whole(0, 10, "a"), whole(10, 14, "b", "c")))
    c = evaluate(w, p, prof)
    # a: one task a frame (frames embedded: no dependency), one message a frame to each pyramid
    # replica (both features in it: one task's result), though each runs half of the frames
    # (its window reads every one); b and c: half of the tasks, each depending on the 25 frames
    # of its widest window, every frame's message in, half of the results out to the client
    assert c.busy_s["compute a (spatial_conv1..temporal_fc)"] == pytest.approx(10.0 + 0.1 + 2 * 0.02)
    assert c.busy_s["compute b (pyramid..fc3)"] == pytest.approx((4.0 + 0.1 + 25 * 0.001) / 2 + 0.01 + 0.02 / 2)
    assert c.ips == pytest.approx(1 / 10.14)
    free = evaluate(w, p, Profile({"unit": replace(k, **dict.fromkeys(RUNTIME_COSTS, 0.0))}, prof.devices, LINK))
    assert free.busy_s["compute b (pyramid..fc3)"] == pytest.approx(2.0)
    # K frames per task (batch mode): the runtime's work is paid once per task and message
    chain = Plan("tiny", ("a", "b"), (whole(0, 2, "a"), whole(2, 4, "b")))
    tiny = toy_profile(("a", "slow"), ("b", "slow"), kinds={"slow": replace(
        toy_kind(), runtime_task_s=0.4, runtime_receive_s=0.2, runtime_send_s=0.1)})
    per_frame = 0.4 + 0.2 + 0.1                  # b: its task, a's message in, its result out
    assert evaluate(TINY, chain, tiny).busy_s["compute b (d1..d2)"] == pytest.approx(2.5 + per_frame)
    batched = batch_cost(TINY, chain, tiny, 4, {"conv": 0.0, "flatten": 0.0, "dense": 0.0})
    assert batched.busy_s["compute b (d1..d2)"] == pytest.approx(2.5 + per_frame / 4)
    again = DeviceKind.from_dict(k.to_dict())
    assert (again.runtime_task_s, again.runtime_receive_s, again.runtime_send_s) == (0.1, 0.01, 0.02)
    with pytest.raises(ProfileError, match="runtime_receive_s >= 0"):
        replace(k, runtime_receive_s=-1.0)


def test_paper_plans_fit_pi3():
    for name in plans.names():
        p = plans.load(name)
        c = evaluate(workloads.get(p.workload), p, homogeneous("pi3", names=p.devices))
        assert c.fits, (name, c.over_memory)
        assert c.ips > 0 and c.latency_s > 0


def test_errors_name_the_problem():
    prof = toy_profile(("a", "slow"))
    with pytest.raises(ProfileError, match=r"plan devices \['z'\]"):
        evaluate(TINY, Plan("tiny", ("z",), (whole(0, 4, "z"),)), prof)
    with pytest.raises(PlanError, match="cannot split 3 units into 4"):
        shard_units(3, 4)
    assert shard_units(10, 3) == [(0, 4), (4, 7), (7, 10)]
