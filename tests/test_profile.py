"""Profiles: JSON round trips, the shard-time and memory rules, the built-in kinds. No TensorFlow."""

import json

import pytest

import workloads
from mcdask.errors import ProfileError
from mcdask.model import kinds as devices
from mcdask.model.kinds import homogeneous
from mcdask.model.kinds import pi3 as pi3_data
from mcdask.model.profile import SCHEMA, Device, DeviceKind, Link, LinkModel, Profile

VGG = workloads.get("vgg16")
ALEX = workloads.get("alexnet")


def kind(**kw) -> DeviceKind:
    base = dict(kind="toy", memory_bytes=10**9, baseline_bytes=10**8,
                layer_time_s={"vgg16": {l.name: 1.0 for l in VGG.layers}})
    base.update(kw)
    return DeviceKind(**base)


def test_link_model_is_the_network_the_farm_shapes():
    from cluster.devices import KINDS
    from mcdask.model.kinds import pi3

    link = devices.link_for("pi3")
    # RA-L §VI: 62.24 Mbit/s, 8.83 ms round trip; 150.5 kB -> half the round trip + 19.3 ms
    assert link.time_s(150_500) == pytest.approx(0.00883 / 2 + 150_500 * 8 / 62.24e6)
    assert (KINDS["pi3"].link_mbit, KINDS["pi3"].rtt_ms) == (62.24, 8.83)
    assert KINDS["pi3"].memory_bytes == devices.get("pi3").memory_bytes == 2**30 - 64 * 2**20
    # the paper's own fit timed its framework's messages: kept, not used
    assert pi3.PAPER_MESSAGE_FIT.time_s(150_500) == pytest.approx(0.0002 * 150.5 + 0.002)
    with pytest.raises(ProfileError, match="bandwidth_Bps > 0"):
        LinkModel(0.001, 0)


def test_kind_round_trip_builtin():
    for name in devices.KINDS:
        k = devices.get(name)
        again = DeviceKind.from_dict(json.loads(json.dumps(k.to_dict())))
        assert again == k


def test_profile_round_trip_with_links(tmp_path):
    k = kind(shard_time_s={"vgg16": {"fc1": {2048: 0.5}}}, layer_memory_bytes={"vgg16": {"fc2": 123}},
             dense_fixed_s=0.01, dense_s_per_weight_byte=1e-9, resources={"cpu_cores": 4}, sources={"x": "y"})
    prof = Profile({"toy": k}, (Device("a", "toy"), Device("b", "toy")), LinkModel(0.002, 5e6),
                   (Link("a", "client", LinkModel(0.01, 1e6)),), name="two toys", note="hand-made")
    path = tmp_path / "p.json"
    prof.save(path)
    again = Profile.load(path)
    assert again == prof
    assert again.to_dict() == prof.to_dict()
    assert json.loads(path.read_text())["schema"] == SCHEMA
    assert again.link("client", "a").latency_s == 0.01
    assert again.link("a", "b") == LinkModel(0.002, 5e6)
    assert again.transfer_s("a", "a", 10**9) == 0.0


def test_profile_errors_say_what_was_received():
    k = kind()
    with pytest.raises(ProfileError, match="not a profile of schema"):
        Profile.from_dict({"schema": "other/1"})
    with pytest.raises(ProfileError, match=r"kinds \['nope'\]"):
        Profile({"toy": k}, (Device("a", "nope"),), LinkModel(0, 1))
    with pytest.raises(ProfileError, match="repeat"):
        Profile({"toy": k}, (Device("a", "toy"), Device("a", "toy")), LinkModel(0, 1))
    with pytest.raises(ProfileError, match="reserved"):
        Profile({"toy": k}, (Device("client", "toy"),), LinkModel(0, 1))
    with pytest.raises(ProfileError, match="unknown device kind 'pi9'"):
        devices.get("pi9")
    with pytest.raises(ProfileError, match="no time for alexnet layer 'conv1'"):
        k.time_s("alexnet", workloads.get("alexnet").layers[0])


def test_shard_time_rules_in_order():
    fc1 = VGG.layer("fc1")
    measured = kind(shard_time_s={"vgg16": {"fc1": {1024: 0.3}}}, dense_fixed_s=0.05, dense_s_per_weight_byte=1e-9)
    assert measured.time_s("vgg16", fc1, 1024) == 0.3                        # 1. measured
    assert measured.time_s("vgg16", fc1, 2048) == pytest.approx(0.05 + 1e-9 * fc1.shard_param_bytes(2048))  # 2.
    assert measured.time_s("vgg16", fc1) == 1.0                               # whole layer
    assert measured.time_s("vgg16", fc1, 4096) == 1.0
    linear = kind()
    assert linear.time_s("vgg16", fc1, 1024) == pytest.approx(0.25)           # 3. linear in units
    with pytest.raises(ProfileError, match="a conv layer"):
        linear.time_s("vgg16", VGG.layers[0], 3)


def test_weight_memory_factor_and_override():
    fc1 = VGG.layer("fc1")
    k = kind(weight_memory_factor=2.0, layer_memory_bytes={"vgg16": {"fc2": 1000}})
    assert k.weight_memory_bytes("vgg16", fc1) == 2 * fc1.param_bytes
    assert k.weight_memory_bytes("vgg16", fc1, 2048) == 2 * fc1.shard_param_bytes(2048)
    assert k.weight_memory_bytes("vgg16", VGG.layer("fc2"), 1024) == 250


def test_homogeneous_names_and_overrides():
    prof = homogeneous("pi3", 3)
    assert prof.device_names == ("pi3-00", "pi3-01", "pi3-02")
    assert prof.default_link == devices.link_for("pi3")
    named = homogeneous("pi3", names=["x", "y"], baseline_bytes=500_000_000)
    assert named.kind_of("y").baseline_bytes == 500_000_000
    lite = homogeneous("pi3", 2, runtime="litert").kind_of("pi3-01")   # default kernels: auto, counted as mixed
    assert (lite.baseline_bytes, lite.weight_memory_factor, lite.dense_weight_memory_factor) == (80_400_000, 2.15, 1.15)
    assert "litert-auto" in lite.sources["runtime"]
    assert lite.weight_memory_bytes("alexnet", ALEX.layer("fc3")) == round(1.15 * ALEX.layer("fc3").param_bytes)
    assert lite.weight_memory_bytes("alexnet", ALEX.layer("conv2")) == round(2.15 * ALEX.layer("conv2").param_bytes)
    assert Profile.from_dict(homogeneous("pi3", 1, runtime="litert").to_dict()).kind_of("pi3-00") == lite
    fast = homogeneous("pi3", 2, runtime="litert-xnnpack").kind_of("pi3-01")
    assert (fast.baseline_bytes, fast.weight_memory_factor, fast.dense_weight_memory_factor) == (80_100_000, 2.15, None)
    assert homogeneous("pi3", 2, runtime="tensorflow", baseline_bytes=1).kind_of("pi3-00").baseline_bytes == 1
    assert devices.get("pi3").baseline_bytes == pi3_data.BASELINE_BYTES   # the built-in is untouched
    with pytest.raises(ProfileError, match="n=3 but 2 names"):
        homogeneous("pi3", 3, names=["x", "y"])
    with pytest.raises(ProfileError, match="not in profile"):
        prof.kind_of("pi3-07")


def test_pi3_uses_published_numbers():
    k = devices.get("pi3")
    assert k.layer_time_s["vgg16"] == pi3_data.VGG16_PI_S
    alex = k.layer_time_s["alexnet"]
    assert sum(alex.values()) == pytest.approx((0.532 + 0.526 + 0.519) / 3)
    # AlexNet fc2/fc3 have VGG16 dense2/dense3 shapes: the dense model reproduces their times
    assert alex["fc2"] == pytest.approx(0.114) and alex["fc3"] == pytest.approx(0.063)
    act = k.layer_time_s["action"]
    assert sum(act[l.name] for l in workloads.get("action").layers[:5]) == pytest.approx(0.192)
    assert sum(act[l.name] for l in workloads.get("action").layers[5:10]) == pytest.approx(0.199)
    assert act["pyramid"] == 0.0052
    assert k.memory_bytes == 2**30 - 64 * 2**20
    # the memory model puts VGG16's whole fc1 over 1 GB and half of it under
    fc1 = VGG.layer("fc1")
    assert k.baseline_bytes + k.weight_memory_bytes("vgg16", fc1) > k.memory_bytes
    assert k.baseline_bytes + k.weight_memory_bytes("vgg16", fc1, 2048) < k.memory_bytes


def test_tx2_spreads_published_whole_model_times():
    k = devices.get("tx2-cpu")
    assert sum(k.layer_time_s["vgg16"].values()) == pytest.approx((1.928 + 1.926 + 1.928) / 3)
    assert sum(k.layer_time_s["alexnet"].values()) == pytest.approx((0.2007 + 0.2010 + 0.2015) / 3)
    for w in workloads.NAMES:
        assert k.covers(workloads.get(w)) == []


def test_merging_a_cached_profile_with_new_workloads_keeps_every_host_figure():
    """A profile cached for one workload and extended with another keeps the host cores and
    the scheduler/client overheads it was measured with (they were once dropped)."""
    from dataclasses import replace

    from mcdask.profiling.cache import merge_workloads

    base = replace(homogeneous("pi3", 2), host_cores={"h": 2.0}, host_task_overhead_s={"h": 0.001},
                   host_frame_overhead_s={"h": 0.002}, measured={"workloads": ["alexnet"]})
    extra = replace(homogeneous("pi3", 2), measured={"workloads": ["vgg16"]})
    merged = merge_workloads(base, extra)
    assert merged.host_cores == {"h": 2.0}
    assert merged.host_task_overhead_s == {"h": 0.001} and merged.host_frame_overhead_s == {"h": 0.002}
    assert merged.measured["workloads"] == ["alexnet", "vgg16"]
    assert merged.default_link == base.default_link and merged.devices == base.devices
