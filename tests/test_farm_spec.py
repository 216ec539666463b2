"""Farm specs, device kinds and their mapping onto this host: plain data, no processes."""

from pathlib import Path

import pytest

from cluster.devices import (
    DELAY_LINE_OVERHEAD_MS,
    KINDS,
    MIN_QUOTA_US,
    DeviceKind,
    FarmSpec,
    cfs_quota,
    load_spec,
    parse_bytes,
    shaped_link,
    spec_from_dict,
)
from cluster.errors import FarmSpecError
from cluster.network import device_ip, netns_name, tap_names

FARMS = Path(__file__).resolve().parents[1] / "cluster" / "farms"


def test_builtin_kinds_carry_the_published_figures():
    assert KINDS["pi3"].alexnet_s == 0.52 and KINDS["pi3"].memory_bytes == 2**30 - 64 * 2**20
    assert (KINDS["pi3"].link_mbit, KINDS["pi3"].rtt_ms) == (62.24, 8.83)
    assert KINDS["tx2-cpu"].alexnet_s == 0.20
    assert all(k.source for k in KINDS.values())


@pytest.mark.parametrize("host_s, scale, share", [(0.0093, 1, 0.0093 / 0.52), (0.0093, 4, 4 * 0.0093 / 0.52)])
def test_share_is_host_time_over_device_time_times_scale(host_s, scale, share):
    assert KINDS["pi3"].cpu_share_on(host_s, scale) == pytest.approx(share)
    assert KINDS["pi3"].target_alexnet_s(host_s, scale) == pytest.approx(0.52 / scale)


def test_share_above_one_core_is_refused_with_the_fix():
    with pytest.raises(FarmSpecError, match="lower --time-scale"):
        KINDS["tx2-cpu"].cpu_share_on(0.05, 10)


@pytest.mark.parametrize("share", [0.0179, 0.05, 0.3, 1.0])
def test_quota_respects_kernel_minimum_and_share(share):
    quota, period = cfs_quota(share)
    assert quota >= MIN_QUOTA_US
    assert quota / period == pytest.approx(share, rel=0.01)


def test_runtime_share_scales_with_time_and_is_read_from_a_spec():
    assert KINDS["pi3"].runtime_share_on(1) == pytest.approx(0.10)
    assert KINDS["pi3"].runtime_share_on(4) == pytest.approx(0.40)
    assert KINDS["tx2-cpu"].runtime_share > KINDS["pi3"].runtime_share
    spec = spec_from_dict({"kinds": {"slow": {"base": "pi3", "runtime_share": 0.05}},
                           "devices": [{"kind": "slow", "count": 1}]})
    assert spec.kinds["slow"].runtime_share == 0.05 and spec.kinds["slow"].alexnet_s == 0.52
    assert spec_from_dict(spec.to_dict()).kinds["slow"].runtime_share == 0.05  # round trip
    with pytest.raises(FarmSpecError, match="runtime_share must be > 0"):
        spec_from_dict({"kinds": {"x": {"base": "pi3", "runtime_share": 0}}, "devices": [{"kind": "x"}]})


def test_a_whole_device_quota_may_span_several_cores():
    quota, period = cfs_quota(1.5, max_cores=2)
    assert quota / period == pytest.approx(1.5)
    with pytest.raises(FarmSpecError, match="must be in"):
        cfs_quota(1.5)


def test_small_share_gets_a_longer_period():
    assert cfs_quota(0.0179) == (1000, round(1000 / 0.0179))
    assert cfs_quota(0.25) == (5000, 20000)


def test_time_scale_multiplies_bandwidth_and_divides_delay():
    link = shaped_link(KINDS["pi3"], 4)
    assert link.rate_mbit == pytest.approx(4 * 62.24)
    assert link.rtt_ms == pytest.approx(8.83 / 4)
    assert link.delay_ms == pytest.approx(8.83 / 16 - DELAY_LINE_OVERHEAD_MS)
    assert link.host_rtt_ms == pytest.approx(8.83 / 8)


def test_uniform_spec_names_devices_by_kind_and_index():
    spec = FarmSpec.uniform(3, "pi3", link_mbit=100, rtt_ms=2)
    assert [d.name for d in spec.devices()] == ["pi3-00", "pi3-01", "pi3-02"]
    assert spec.kinds["pi3"].link_mbit == 100 and spec.kinds["pi3"].rtt_ms == 2


def test_mixed_example_loads():
    spec = load_spec(FARMS / "mixed.yaml")
    names = [d.name for d in spec.devices()]
    assert names == ["pi3-00", "pi3-01", "pi3-02", "pi3-03", "pi4-00", "pi4-01", "tx2-cpu-00"]
    assert spec.kinds["pi4"].alexnet_s == 0.26 and spec.kinds["tx2-cpu"].memory_bytes == 8 * 2**30
    assert spec_from_dict(spec.to_dict()).devices() == spec.devices()


def test_spec_kind_inherits_from_base_and_overrides():
    spec = spec_from_dict({"kinds": {"slowpi": {"base": "pi3", "alexnet_s": 1.0, "link": {"mbit": 20}}},
                           "devices": [{"kind": "slowpi", "count": 2}]})
    k = spec.kinds["slowpi"]
    assert (k.alexnet_s, k.memory_bytes, k.link_mbit, k.rtt_ms) == (1.0, 2**30 - 64 * 2**20, 20.0, 8.83)


@pytest.mark.parametrize("data, match", [
    ({"devices": [{"kind": "nope", "count": 1}]}, "does not define"),
    ({"devices": []}, "lists no devices"),
    ({"devices": [{"kind": "pi3", "count": 0}]}, "integer 1..99"),
    ({"kinds": {"x": {"memory": "1GiB", "link": {"mbit": 1, "rtt_ms": 1}}}, "devices": [{"kind": "x"}]}, "alexnet_s"),
    ({"kinds": {"x": {"alexnet_s": 1, "cpu_share": 0.1, "memory": "1GiB", "link": {"mbit": 1, "rtt_ms": 1}}},
      "devices": [{"kind": "x"}]}, "exactly one"),
    ({"devices": [{"kind": "pi3"}], "colour": "red"}, "unknown keys"),
    ({"version": 2, "devices": [{"kind": "pi3"}]}, "version"),
])
def test_bad_specs_say_what_is_wrong(data, match):
    with pytest.raises(FarmSpecError, match=match):
        spec_from_dict(data)


def test_kind_names_fit_interface_and_worker_names():
    with pytest.raises(FarmSpecError, match="1-10 characters"):
        DeviceKind("a-very-long-kind", 2**30, 1, 1, alexnet_s=1)


@pytest.mark.parametrize("text, n", [("1GiB", 2**30), ("512 MiB", 512 * 2**20), ("2GB", 2 * 10**9), (1234, 1234)])
def test_parse_bytes(text, n):
    assert parse_bytes(text) == n


def test_names_and_addresses():
    assert all(len(n) <= 15 for n in tap_names(199))
    assert netns_name("tx2-cpu-00") == "mcd-tx2-cpu-00"
    assert device_ip(0) == "10.77.0.10" and device_ip(199) == "10.77.0.209"
