"""The bench's arithmetic on fixed inputs."""

import math

import pytest

from bench import metrics, paper


def test_energy_model_interpolates_pi3_power():
    # two devices: one idle, one fully busy; 2 inferences per second
    e = metrics.energy_per_inference({"a": 0.0, "b": 1.0}, ips=2.0)
    assert e["power_w"] == pytest.approx(1.3 + 6.5)
    assert e["static_j"] == pytest.approx(2 * 1.3 / 2)
    assert e["dynamic_j"] == pytest.approx(5.2 / 2)
    assert e["total_j"] == pytest.approx(e["static_j"] + e["dynamic_j"])
    # utilisation is clamped to [0, 1]
    assert metrics.energy_per_inference({"a": 1.7}, 1.0)["total_j"] == pytest.approx(6.5)
    with pytest.raises(ValueError, match="ips must be positive"):
        metrics.energy_per_inference({"a": 0.5}, 0.0)


def test_one_pi_matches_published_power_range():
    """One Pi 3 running AlexNet flat out at 1.92 IPS: 6.5 W / 1.92 = 3.39 J per inference."""
    e = metrics.energy_per_inference({"pi": 1.0}, 1.92)
    assert e["total_j"] == pytest.approx(6.5 / 1.92)


def test_bounds_and_efficiency():
    assert metrics.compute_bound_ips({"a": 0.5, "b": 0.25}) == pytest.approx(6.0)
    assert metrics.memory_feasible_bound_ips(10.0, 5) == pytest.approx(0.5)
    busy = {"compute a": 0.2, "link a<->b": 0.05, "link a<->c": 0.1, "link b<->c": 0.01,
            "client link (client: frames out, results in)": 0.02}
    # device a's link carries 0.05 + 0.1 s per frame
    assert metrics.link_bound_ips(busy) == pytest.approx(1 / 0.15)
    assert metrics.link_bound_ips({"compute a": 1.0}) == math.inf
    assert metrics.efficiency(9.0, 10.0, 12.0) == pytest.approx(0.9)
    assert metrics.utilisation({"a": 3.0, "b": 1.5}, 6.0) == {"a": 0.5, "b": 0.25}


def test_reference_rows_name_their_source():
    for workload, rows in paper.REFERENCE.items():
        assert any(r["system"] == "Jetson TX2 (GPU)" for r in rows)
        for r in rows:
            assert r["source"] and r["ips"] > 0
            parts = [r["static_j"], r["dynamic_j"], r["total_j"]]
            if None not in parts:  # bar readings are good to about 2 % of the axis
                assert r["static_j"] + r["dynamic_j"] == pytest.approx(r["total_j"], rel=0.02)
    assert paper.tx2_gpu_ips("alexnet") == 7.14
