"""The emulated farm for real: namespaces, shaped links, cgroup caps, stock dask workers.

Needs root, iproute2 and cgroups (CI here runs as root); skipped with the reason otherwise.
One farm runs per machine, so these tests skip if another farm is up. Shortened with
--time-scale: devices run K times faster with K times the bandwidth and 1/K the delay.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import has_root_netns, nothing_left

from bench.calibration_check import DEVICE_BAR, FARM_BAR

ok, why = has_root_netns()
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(not ok, reason=why)]
BIN = Path(sys.executable).parent
SCALE = 4
SPAN_S = 4.0   # seconds each calibration round times a device (mcdask farm up's default: 3)


def mcdask(*args, timeout=900, env=None):
    return subprocess.run([sys.executable, "-m", "mcdask.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def last_json(r):
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_up_then_down_leaves_nothing():
    st = last_json(mcdask("farm", "up", "--devices", "2", "--time-scale", "8", "--no-verify", "--json"))
    assert st["mode"] == "netns" and st["cpu_capped"] and st["network_shaped"]
    assert st["calibration"]["host_time_s"] > 0
    st = last_json(mcdask("farm", "status", "--json"))
    assert [d["name"] for d in st["devices"]] == ["pi3-00", "pi3-01"]
    for d in st["devices"]:
        assert d["alive"] and d["cpu_quota_now"] == {"quota_us": d["cpu_quota_us"], "period_us": d["cpu_period_us"]}
        assert d["memory_limit_bytes"] == 2**30 - 64 * 2**20 and d["link_mbit"] == pytest.approx(8 * 62.24)
    assert nothing_left()  # it did make things
    r = mcdask("farm", "down")
    assert r.returncode == 0, r.stderr
    assert nothing_left() == {}
    r = mcdask("farm", "down")  # harmless twice
    assert r.returncode == 0 and "nothing" in r.stderr


def test_down_cleans_after_farm_up_is_killed():
    p = subprocess.Popen([sys.executable, "-m", "mcdask.cli", "farm", "up", "--devices", "2", "--time-scale", "8",
                          "--no-verify", "--host-time-s", "0.01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    state = Path("/run/mcdask-farm/state.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it once workers exist, before it finishes
        try:
            if sum(x["role"] == "worker" for x in json.loads(state.read_text())["resources"]["pids"]) == 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)  # no chance to clean up
    p.wait()
    assert nothing_left()
    r = mcdask("farm", "down")
    assert r.returncode == 0, r.stderr
    assert nothing_left() == {}


@pytest.fixture(scope="module")
def farm3():
    """3 pi3 devices, K times faster, with calibration and in-farm verification, on tensorflow (the
    litert farm, the default, has tests/test_farm_litert.py): TensorFlow's threads under the quota
    and its AlexNet time held to the target."""
    st = last_json(mcdask("farm", "up", "--devices", "3", "--time-scale", str(SCALE), "--backend", "tensorflow",
                          "--calibration-span", str(SPAN_S), "--json"))
    yield st
    r = mcdask("farm", "down")
    assert r.returncode == 0, r.stderr


def test_transfer_between_devices_runs_at_shaped_bandwidth(farm3):
    from cluster.devices import KINDS, shaped_link
    from cluster.farm import measure_link

    r = measure_link("pi3-00", "pi3-01", nbytes=16_000_000)
    assert r["mbit_s"] == pytest.approx(SCALE * 62.24, rel=0.2), r
    # the delay line holds each frame for its configured delay on each of the 4 crossings: the
    # fastest ping cannot beat that (its own overhead, which the configured delay leaves room for,
    # can come out smaller: CI read 2.05 and 2.08 ms against 2.21 shaped), while a busy host only
    # adds (CI once read a 2.99 ms median)
    rtt = 8.83 / SCALE
    held = 4 * shaped_link(KINDS["pi3"], SCALE).delay_ms
    assert held <= r["rtt_ms_min"] <= 1.25 * rtt + 0.3, (r, held)
    assert r["rtt_ms_median"] <= 1.6 * rtt + 0.5, r  # not the unscaled 8.83 ms


def test_equivalence_through_a_three_device_farm(farm3):
    if importlib.util.find_spec("mcdask.commands") is None:
        pytest.skip("the runtime's `mcdask run` (mcdask.commands) is not installed yet")
    r = mcdask("run", "--scheduler", farm3["scheduler"], "--workload", "alexnet", "--source", "synthetic",
               "--frames", "6", "--check", "--json", "--backend", "tensorflow")
    summary = last_json(r)
    assert summary["devices"] == 3 and summary["equal"] is True
    assert summary["max_abs_diff"] <= 1e-5 * summary["output_scale"]


def test_model_threads_run_under_the_compute_quota_and_dask_outside_it(farm3):
    """Every TensorFlow thread of a device is in its compute cgroup; its Python threads (the
    event loop, the task thread) are in the device cgroup."""
    from distributed import Client

    from cluster import compute_threads

    dev = farm3["devices"][0]
    assert dev["device_share"] == pytest.approx(dev["cpu_share"] + dev["runtime_share"])
    assert dev["device_quota_now"]["quota_us"] / dev["device_quota_now"]["period_us"] == pytest.approx(
        dev["device_share"], rel=0.02)
    with Client(farm3["scheduler"], timeout="30s", set_as_default=False) as c:
        task_tid = c.submit(lambda: __import__("threading").get_native_id(), workers=[dev["address"]],
                            pure=False).result()
        where = c.run(compute_threads.placement, workers=[dev["address"]])[dev["address"]]
    compute = [t for t in where["threads"] if t["cgroup"].endswith(f"/{dev['name']}/compute")]
    assert where["target"].endswith(f"/{dev['name']}/compute/tasks")
    assert any(t["name"].startswith("tf_") for t in compute), where
    for t in where["threads"]:
        if t["name"].startswith("tf_"):
            assert t in compute, where
        if t["main"] or t["tid"] == task_tid:
            assert t["cgroup"].endswith(f"/{dev['name']}"), where


def test_status_shows_each_device_calibration(farm3):
    """Each device's record says what its closed loop found: its rounds, the last one's time,
    the share it keeps (the last round's if that was within 5 %) and the quota it runs under;
    every round timed each device for the span farm up was given."""
    st = last_json(mcdask("farm", "status", "--json"))
    assert st["verification"]["span_s"] == SPAN_S
    within = 0
    for d in st["devices"]:
        cal, last = d["calibration"], d["calibration"]["rounds"][-1]
        assert all(SPAN_S <= r["elapsed_s"] < SPAN_S + 2 for r in cal["rounds"]), cal["rounds"]
        assert cal["target_s"] == pytest.approx(0.52 / SCALE) and cal["iterations"] == len(cal["rounds"]) >= 1
        assert cal["measured_s"] == last["measured_s"] == d["verified_alexnet_s"] and cal["share"] == d["cpu_share"]
        assert cal["within_tolerance"] == (abs(cal["error"]) <= 0.05)
        if cal["within_tolerance"]:
            assert cal["share"] == last["share"]
        assert (cal["quota_us"], cal["period_us"]) == (d["cpu_quota_now"]["quota_us"], d["cpu_quota_now"]["period_us"])
        within += cal["within_tolerance"]
    assert st["verification"]["within"] == within and st["verification"]["devices"] == 3
    assert st["verification"]["rounds"] == max(len(d["calibration"]["rounds"]) for d in st["devices"])


#: DEVICE_BAR, FARM_BAR: how far a device may be from its farm's median (the median of 3
#: timings each), and how far the farm's median may be from the target times the host's drift. Measured with `python -m
#: bench.calibration_check --farm-ups 10 --devices 6 --time-scale 4|1` on this 2-core VM
#: (bench/results/calibration-*.json, 60 timings of 6 devices per file): devices sit within
#: 0.89-1.08 of their farm's median at 4x (0.91-1.20 at 1x under load), while the farm's median
#: moves 0.82-1.20 of the target from one timing to the next with the host, all devices together;
#: CI runs read 0.79 and, a minute after a calibration within 4 %, 1.34-1.49 on all three devices.
#: The loop sets quotas at farm up and cannot hold what it does not control, so the device bar is
#: the tight one, and the farm bar divides out the host's own slowing (its fresh-process AlexNet
#: time moves 10-15 % from one run to the next here). A missing quota reads about 10x too fast,
#: a share off by the time scale 4x: both fail here. (DEVICE_BAR and FARM_BAR live in
#: bench.calibration_check, which reports this verdict over many farm-ups.)


def test_every_device_alexnet_time_is_within_bar_of_target(farm3):
    """Runs last: the workers keep what TensorFlow does not give back. As the calibration
    loop measures, and as a stream loads them: the model is built with the quota lifted,
    then every device times it at the same time, under its quotas, from its task thread
    (the sustained mean of back-to-back inferences), three times. The farm's median is held
    to its target, or, where it is off, to its target times the host's drift since farm up:
    this host's AlexNet time in a fresh process (as farm up measures it) just after the
    timings, over farm up's."""
    import statistics

    import psutil
    from distributed import Client

    from cluster import calibrate, closed_loop, farm

    devices = farm3["devices"]
    cpu0 = psutil.cpu_times()
    with Client(farm3["scheduler"], timeout="30s", set_as_default=False) as c, \
            closed_loop.reference_built(c, devices, 300, farm.set_caps):
        timings = [closed_loop.time_devices(c, devices, 300) for _ in range(3)]
    cpu1 = psutil.cpu_times()
    ratios = {d["name"]: statistics.median(t[d["name"]]["mean_s"] for t in timings) / (0.52 / SCALE)
              for d in devices}
    farm_ratio = statistics.median(ratios.values())
    busy = {k: round(getattr(cpu1, k) - getattr(cpu0, k), 1) for k in ("user", "system", "idle", "steal")}
    why: tuple = (ratios, {"host_cpu_s": busy, "loadavg": psutil.getloadavg()}, [d["calibration"] for d in devices])
    assert all(abs(r / farm_ratio - 1) <= DEVICE_BAR for r in ratios.values()), why
    if abs(farm_ratio - 1) > FARM_BAR:
        now = calibrate.host_time_s()["host_time_s"]
        drift = now / farm3["calibration"]["host_time_s"]
        why = (ratios, {"host_drift": drift, "host_s": (farm3["calibration"]["host_time_s"], now)}, *why[1:])
        assert abs(farm_ratio / drift - 1) <= FARM_BAR, why
