"""A litert farm: devices that get LiteRT ready and never import TensorFlow, whose model thread
(where every LiteRT kernel runs) is under the compute quota, calibrated against TensorFlow's
AlexNet time through LiteRT's speed-up on this host.

Needs root and namespaces, like ``test_farm.py``; one farm per machine.
"""

import os
import subprocess
import sys

import pytest
from conftest import has_root_netns
from test_farm import SCALE, last_json, mcdask

ok, why = has_root_netns()
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(not ok, reason=why)]


@pytest.fixture(scope="module")
def lite_farm():
    st = last_json(mcdask("farm", "up", "--devices", "2", "--time-scale", str(SCALE), "--backend", "litert", "--json"))
    yield st
    r = mcdask("farm", "down")
    assert r.returncode == 0, r.stderr


def test_litert_devices_run_lite_under_the_compute_quota(lite_farm):
    from distributed import Client

    from cluster import compute_threads

    # defined here, so Dask sends it by value (a worker cannot import this test module)
    _modules = lambda: sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "ai_edge_litert"})
    st = lite_farm
    assert st["backend"] == "litert" and st["verification"]["backend"] == "litert"
    cal = st["calibration"]
    # LiteRT's time over TensorFlow's from interleaved blocks of both in one process, so that the
    # host's swing between two separate timings does not set every litert device's target
    ratio = cal["litert"]["ratio"]
    assert cal["litert"]["relative_to"] == "tensorflow" and "--relative-to tensorflow" in cal["litert"]["command"]
    assert st["verification"]["runtime_ratio"] == pytest.approx(ratio) and 0.2 < ratio < 2, cal
    for d in st["devices"]:  # each device's LiteRT time stands for TensorFlow's target
        c = d["calibration"]
        assert c["target_s"] == pytest.approx(0.52 / SCALE * ratio)
        assert d["verified_alexnet_s"] == pytest.approx(c["measured_s"] / ratio)

    r = mcdask("run", "--scheduler", st["scheduler"], "--workload", "alexnet", "--source", "synthetic",
               "--frames", "6", "--backend", "litert", "--check", "--json")
    summary = last_json(r)
    assert summary["backend"] == "litert" and summary["equal"] is True, summary
    with Client(st["scheduler"], timeout="30s", set_as_default=False) as c:
        for dev in st["devices"]:
            task_tid = c.submit(lambda: __import__("threading").get_native_id(), workers=[dev["address"]],
                                pure=False).result()
            where = c.run(compute_threads.placement, workers=[dev["address"]])[dev["address"]]
            assert c.run(_modules, workers=[dev["address"]])[dev["address"]] == ["ai_edge_litert"]
            names = {t["name"]: t for t in where["threads"]}
            model = names["mcdask-model"]
            assert compute_threads.is_compute(model["cgroup"]), where
            assert not any(n.startswith("tf_") for n in names), where
            for t in where["threads"]:
                if t["main"] or t["tid"] == task_tid:
                    assert t["cgroup"].endswith(f"/{dev['name']}"), where


def test_one_call_of_a_piece_is_timed_on_the_devices_under_their_quotas(lite_farm):
    """What the bench's farm profile adds to each task: one call of a LiteRT piece that computes
    next to nothing, from each device's task thread, under its quotas, at Pi speed."""
    from distributed import Client

    from bench.farm_calls import call_cost

    with Client(lite_farm["scheduler"], timeout="30s", set_as_default=False) as c:
        r = call_cost(c, [d["address"] for d in lite_farm["devices"]], SCALE, min_s=1.0, max_s=3.0)
    assert r["devices"] == 2 and r["piece"] == "alexnet/flatten"
    # under a quota of a few % of a core, at Pi speed, a call takes longer than on this host alone
    assert 0 < r["host_s"] < r["device_s"] < 1.0, r


def test_a_bench_on_the_other_backend_is_refused_in_one_line(lite_farm):
    r = subprocess.run([sys.executable, "-m", "mcdask.cli", "bench", "--scheduler", lite_farm["scheduler"],
                        "--workload", "alexnet", "--devices", "1", "--time-scale", str(SCALE), "--name", "refused",
                        "--backend", "tensorflow"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: the farm's devices put litert's threads under their compute quota, not tensorflow's; "
        "bring it up with `mcdask farm up --backend tensorflow`"), r.stderr
