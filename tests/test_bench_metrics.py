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
    busy = {"compute a": 0.2, "link a<->b": 0.05, "link a<->c": 0.1, "link b<->c": 0.01,
            "client link (client: frames out, results in)": 0.02}
    # device a's link carries 0.05 + 0.1 s per frame
    assert metrics.link_bound_ips(busy) == pytest.approx(1 / 0.15)
    assert metrics.link_bound_ips({"compute a": 1.0}) == math.inf
    assert metrics.efficiency(9.0, 10.0, 12.0) == pytest.approx(0.9)
    assert metrics.utilisation({"a": 3.0, "b": 1.5}, 6.0) == {"a": 0.5, "b": 0.25}


def test_reference_rows_name_their_source():
    for rows in paper.REFERENCE.values():
        assert any(r["system"] == "Jetson TX2 (GPU)" for r in rows)
        for r in rows:
            assert r["source"] and r["ips"] > 0
            parts = [r["static_j"], r["dynamic_j"], r["total_j"]]
            if None not in parts:  # bar readings are good to about 2 % of the axis
                assert r["static_j"] + r["dynamic_j"] == pytest.approx(r["total_j"], rel=0.02)
    assert paper.reference("alexnet", "Jetson TX2 (GPU)")["ips"] == 7.14


def test_report_writes_table_plots_and_json(tmp_path):
    import json

    from bench import report
    from bench.cli import parse_devices

    assert parse_devices("1-3,6,2") == (1, 2, 3, 6)
    row = {"workload": "alexnet", "devices": 2, "strategy": "optimal", "feasible": True, "ips": 8.0,
           "ips_pi_speed": 2.0, "predicted_ips": 2.5, "measured_over_predicted": 0.8, "latency_p50_s": 0.2,
           "latency_p99_s": 0.3, "compute_bound_ips": 4.0, "link_bound_ips": float("inf"), "efficiency": 0.5,
           "utilisation_mean": 0.5, "runtime_share_of_frame_time": 0.01,
           "energy": metrics.energy_per_inference({"a": 0.5, "b": 0.5}, 2.0)}
    result = {"settings": {"workloads": ["alexnet"], "devices": [2], "strategies": ["optimal"], "time_scale": 4.0,
                           "profile": "pi3"},
              "farm": {"mode": "netns", "cpu_capped": True, "network_shaped": True}, "machine": {"cores": 2},
              "wall_s": 10.0, "rows": [row, {"workload": "alexnet", "devices": 1, "strategy": "optimal",
                                            "feasible": False, "reason": "fc1 needs 2 GB"}],
              "reference": {}}
    report.write(result, tmp_path, "t")
    md = (tmp_path / "t.md").read_text()
    assert "| 2 | optimal | 2.00 | 2.50 | 0.80 | 0.80 | 1.20 |" in md    # latencies x time scale
    assert "infeasible: fc1 needs 2 GB" in md and "Jetson TX2 (GPU) | 1 | 7.14" in md
    assert json.loads((tmp_path / "t.json").read_text())["rows"][0]["ips"] == 8.0
    assert (tmp_path / "t-alexnet.png").stat().st_size > 10_000


def _split(**by_workload):
    return {"cpu": "test cpu", "statistic": "fixed", "workloads": {
        w: {"conv_s": c, "dense_s": d, "runs": []} for w, (c, d) in by_workload.items()}}


def test_farm_profile_rebalances_conv_and_dense_to_the_host_split():
    """AlexNet on the host: 3 ms of conv side, 6 ms dense; the farm slows it to 0.52 s. The
    farm kind keeps the Pi's times within each side and scales each side's sum to that."""
    import workloads
    from bench.farm_profile import farm_kind, runs
    from mcdask.model import kinds as devices

    pi3 = devices.get("pi3")
    kind = farm_kind(pi3, _split(alexnet=(0.003, 0.006), action=(0.002, 0.018)), 0.52, n_devices=6)
    for name, (c, d) in {"alexnet": (0.003, 0.006), "action": (0.002, 0.018)}.items():
        w = workloads.get(name)
        slow = 0.52 / 0.009
        conv = sum(kind.time_s(name, l) for l in w.layers if l.kind != "dense")
        dense = sum(kind.time_s(name, l) for l in w.layers if l.kind == "dense")
        assert conv == pytest.approx(c * slow) and dense == pytest.approx(d * slow)
        # within a side, the Pi's proportions stay
        a, b = [l for l in w.layers if l.kind == "dense"][:2]
        assert kind.time_s(name, a) / kind.time_s(name, b) == pytest.approx(pi3.time_s(name, a) / pi3.time_s(name, b))
    assert sum(kind.time_s("alexnet", l) for l in workloads.get("alexnet").layers) == pytest.approx(0.52)
    fc1 = workloads.get("alexnet").layers[9]
    assert kind.time_s("alexnet", fc1, 2048) == pytest.approx(
        pi3.time_s("alexnet", fc1, 2048) * kind.measured["factors"]["alexnet"]["dense"])
    assert kind.memory_bytes == pi3.memory_bytes and kind.baseline_bytes == pi3.baseline_bytes
    assert (kind.task_overhead_s, kind.runtime_task_s, kind.runtime_receive_s, kind.runtime_send_s) == (0, 0, 0, 0)
    assert kind.sources["runtime_receive_s"] == "not measured"
    # Dask's own CPU on the farm's workers runs at the devices' runtime share of a host core
    # and one call of a piece on the devices, less what the host split already counts of it
    costed = farm_kind(pi3, _split(alexnet=(0.003, 0.006)), 0.52, n_devices=6, runtime_share=0.1, costs={
        "dask": {"task_s": 0.0004, "receive_s": 0.0002, "send_s": 0.0001, "dependency_s": 0.00005, "tasks": 8},
        "call": {"device_s": 0.030, "host_s": 0.0001}})
    assert costed.task_overhead_s == pytest.approx(0.030 - 0.0001 * 0.52 / 0.009)
    assert costed.runtime_task_s == pytest.approx(0.004)
    assert costed.runtime_dependency_s == pytest.approx(0.0005)
    assert costed.runtime_receive_s == pytest.approx(0.002)
    assert costed.runtime_send_s == pytest.approx(0.001)
    assert "receive_s 0.200 ms" in costed.sources["runtime_receive_s"]
    assert costed.time_s("alexnet", fc1) == kind.time_s("alexnet", fc1)
    # the action model's pyramid (a windowed layer) starts a run of its own
    action = workloads.get("action")
    starts = [action.layers[a].name for a, _ in runs(action)]
    assert "pyramid" in starts and starts[0] == "spatial_conv1"


@pytest.mark.parametrize("runtime, alexnet_dense, vgg16_dense, conv", [
    ("litert-auto", "xnnpack", "builtin", "xnnpack"),     # VGG16's XNNPACK copy does not fit 1 GB
    ("litert-mixed", "builtin", "builtin", "xnnpack"), ("litert-xnnpack", "xnnpack", "xnnpack", "xnnpack"),
    ("litert-builtin", "builtin", "builtin", "builtin")])
def test_a_litert_farm_profile_times_each_side_on_the_kernels_its_devices_run(runtime, alexnet_dense, vgg16_dense,
                                                                              conv):
    """On litert the farm calibrates LiteRT's AlexNet to the target x its speed-up over
    TensorFlow (runtime_ratio): each side's sum is the host's LiteRT time on the kernels the
    device runs it on, slowed as the farm slows LiteRT's AlexNet (XNNPACK) to that."""
    import workloads
    from bench.farm_profile import farm_kind
    from mcdask.model import kinds as devices
    from mcdask.model import runtimes

    times = {"alexnet": {"conv_xnnpack_s": 0.002, "conv_builtin_s": 0.006, "dense_xnnpack_s": 0.004,
                         "dense_builtin_s": 0.0056},
             "vgg16": {"conv_xnnpack_s": 0.2, "conv_builtin_s": 0.6, "dense_xnnpack_s": 0.01, "dense_builtin_s": 0.014}}
    split = {"cpu": "test cpu", "backend": "litert", "workloads": {
        w: {**t, "conv_s": t["conv_xnnpack_s"], "dense_s": t["dense_xnnpack_s"], "runs": []} for w, t in times.items()}}
    pi3 = runtimes.on(devices.get("pi3"), runtime)
    kind = farm_kind(pi3, split, 0.52, n_devices=4, runtime=runtime, runtime_ratio=0.6)
    slow = 0.52 * 0.6 / 0.006
    for name, dense_kernel in (("alexnet", alexnet_dense), ("vgg16", vgg16_dense)):
        w = workloads.get(name)
        conv_side = sum(kind.time_s(name, l) for l in w.layers if l.kind != "dense")
        dense_side = sum(kind.time_s(name, l) for l in w.layers if l.kind == "dense")
        assert conv_side == pytest.approx(times[name][f"conv_{conv}_s"] * slow)
        assert dense_side == pytest.approx(times[name][f"dense_{dense_kernel}_s"] * slow)
        fc1 = next(l for l in w.layers if l.kind == "dense")
        assert kind.time_s(name, fc1, fc1.units // 2) == pytest.approx(
            pi3.time_s(name, fc1, fc1.units // 2) * kind.measured["factors"][name][f"dense_{dense_kernel}"])
    assert kind.measured["runtime_ratio"] == 0.6 and kind.baseline_bytes == pi3.baseline_bytes


def test_a_partial_run_never_takes_the_full_runs_file_name():
    from bench.provenance import PartialRunError, result_name

    assert result_name("bench", True, None, "bench-alexnet-n6") == "bench"
    assert result_name("bench", False, None, "bench-alexnet-n6") == "bench-alexnet-n6"
    assert result_name("bench", False, "mine", "bench-alexnet-n6") == "mine"
    with pytest.raises(PartialRunError, match="would overwrite bench/results/bench"):
        result_name("bench", False, "bench", "bench-alexnet-n6")


@pytest.mark.parametrize("args", [["--workload", "alexnet", "--devices", "6"], ["--frames", "48"],
                                  ["--profile", "pi3"], ["--profile", "device", "--backend", "tensorflow"],
                                  ["--repeats", "3"], ["--min-seconds", "5"]])
def test_bench_cli_refuses_a_partial_run_under_the_full_name_before_starting_anything(args):
    """Fewer workloads or devices, other frame counts, another planning profile: each a run
    whose figures are not the full run's."""
    from click.testing import CliRunner

    from bench.cli import bench

    r = CliRunner().invoke(bench, [*args, "--name", "bench"])
    assert r.exit_code == 2 and "this run is partial" in r.output


def test_a_row_streams_its_minimum_seconds_at_the_predicted_rate_reusing_runnable_frames():
    """Past the frames generated, a row reuses the runnable ones in turn (never a warm-up or a
    bad frame), numbered on from the last, until it lasts ``min_seconds`` of steady state."""
    import numpy as np

    from bench.row_length import STEADY_SKIP, cycled, frames_for
    from mcdask.streaming.records import Item

    assert frames_for(100, 25.0, 30) == math.ceil(30 * 25.0 / (1 - STEADY_SKIP)) == 938
    assert frames_for(100, 1.0, 30) == 100                     # already longer than 30 s
    assert frames_for(100, None, 30) == frames_for(100, 25.0, 0) == 100
    a, b = np.zeros(1), np.ones(1)
    items = [Item(0, warmup=True), Item(1, {"x": a}), Item(2, error="frame 2: bad"), Item(3, {"x": b})]
    assert cycled(items, 3) == items[:3]
    out = cycled(items, 9)
    assert [it.frame for it in out] == list(range(9)) and out[:4] == items
    assert [id(it.inputs["x"]) for it in out[4:]] == [id(a), id(b), id(a), id(b), id(a)]
    assert not any(it.warmup or it.error for it in out[4:])
    with pytest.raises(ValueError, match="no runnable frame"):
        cycled([Item(0, warmup=True)], 2)


def test_host_noise_windows_are_mean_seconds_per_call_of_each_whole_window():
    from bench.host_noise import spread, windows

    # calls ending every 0.1 s for 2 s, then every 0.2 s; a call ending on a window's edge counts
    # in the next window, and the last, partial window (4.0 to 4.5) is left out
    ends = [0.1 * k for k in range(1, 21)] + [2 + 0.2 * k for k in range(1, 11)] + [4.05]
    assert windows(ends, 2.0, 4.5) == pytest.approx([2 / 19, 2 / 10])
    assert windows(ends, 1.0, 4.0) == pytest.approx([1 / 9, 1 / 10, 1 / 5, 1 / 5])
    s = spread(windows(ends, 1.0, 4.0))
    assert s["windows"] == 4 and s["max_over_min"] == pytest.approx(2.0)
    assert s["median_s"] == pytest.approx((1 / 9 + 1 / 5) / 2)


def test_a_bench_of_two_backends_is_one_result_with_a_row_per_backend(tmp_path):
    """``--backend tensorflow --backend litert``: each backend's run on its own farm, merged into
    one result whose rows and table say which backend measured them, with each device's peak."""
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from bench import report
    from bench.backend_runs import default_profile, merge
    from bench.cli import bench

    one = json.loads((Path(__file__).parent.parent / "bench/results/issue13-alexnet-device.json").read_text())
    row = dict(one["rows"][0], device_peak_rss_bytes={"d0": 700e6, "d1": 812e6},
               device_memory_limit_bytes={"d0": 1006.6e6, "d1": 1006.6e6})

    def result(runtime, ips):
        return {**one, "settings": {**one["settings"], "backend": runtime, "backends": [runtime],
                                    "profile": default_profile(runtime)},
                "farm": {"mode": "netns", "cpu_capped": runtime == "tensorflow"}, "wall_s": 10.0,
                "rows": [dict(row, ips_pi_speed=ips, backend=runtime)]}

    merged = merge([result("tensorflow", 3.0), result("litert-auto", 4.5)])
    assert merged["settings"]["backends"] == ["tensorflow", "litert-auto"] and merged["wall_s"] == 20.0
    assert [r["backend"] for r in merged["rows"]] == ["tensorflow", "litert-auto"]
    assert merged["farms"]["litert-auto"]["cpu_capped"] is False
    # each backend planned on its own profile: the device profile times TensorFlow's pieces
    assert merged["settings"]["profiles"] == {"tensorflow": "device", "litert-auto": "farm"}
    md = report.markdown(merged)
    assert "| tensorflow | 2 | optimal | 3.00 |" in md and "| litert-auto | 2 | optimal | 4.50 |" in md
    assert "Farm for litert-auto: mode: netns; CPU capped: False" in md and "| 812 / 1,007 |" in md
    assert "Farm for tensorflow: mode: netns; CPU capped: True; network shaped: None; planned on the device" in md
    lines = report.summary(merged).splitlines()
    assert lines[0].startswith("| backend | workload") and len(lines) == 4
    assert lines[3].startswith("| litert-auto | alexnet | 2 | 4.50 |")
    # one backend: no backend column, as before
    assert "| 2 | optimal | 3.00 |" in report.markdown(merge([result("tensorflow", 3.0)]))
    assert "| tensorflow |" not in report.markdown(merge([result("tensorflow", 3.0)]))
    with pytest.raises(ValueError, match="one backend twice"):
        merge([result("tensorflow", 3.0), result("tensorflow", 3.1)])
    # a farm that is up runs one backend: refused in one line before anything starts
    r = CliRunner().invoke(bench, ["--backend", "tensorflow", "--backend", "litert", "--scheduler", "tcp://x:1"])
    assert r.exit_code == 2 and "--scheduler names one farm, which runs one backend" in r.output
    # the device profile times TensorFlow's pieces: a litert bench (the default backend) plans on the farm's
    r = CliRunner().invoke(bench, ["--profile", "device", "--name", "x"])
    assert r.exit_code == 2 and "--profile device times TensorFlow's pieces" in r.output


def test_bench_repeats_keep_the_median_run_and_the_spread():
    """``--repeats 3``: the row is the median run's, with every run's IPS and the spread."""
    from bench import repeats

    ips = iter([10.0, 12.0, 11.0])
    lines = []
    row = repeats.measure_repeated("plan", lambda p: {"ips_pi_speed": next(ips), "latency_p50_s": 1.0, "plan": p},
                                   3, lines.append)
    assert row["ips_pi_speed"] == row["ips_median"] == 11.0 and row["plan"] == "plan"
    assert [r["ips_pi_speed"] for r in row["runs"]] == [10.0, 12.0, 11.0]
    assert row["ips_spread"] == pytest.approx(2.0 / 11.0) and len(lines) == 4 and "spread 18.2%" in lines[-1]
    even = repeats.combine([{"ips_pi_speed": 4.0}, {"ips_pi_speed": 2.0}])
    assert even["ips_pi_speed"] == 2.0 and even["ips_median"] == 3.0   # the lower middle run, the true median
    assert repeats.measure_repeated("p", lambda p: {"ips_pi_speed": 5.0}, 1) == {"ips_pi_speed": 5.0}
    with pytest.raises(ValueError, match="at least one"):
        repeats.combine([])
    # the table shows the median and the runs' range
    import json
    from pathlib import Path

    from bench import report

    result = json.loads((Path(__file__).parent.parent / "bench/results/issue13-alexnet-device.json").read_text())
    one = result["rows"][0]
    runs = [dict(one, ips_pi_speed=x) for x in (3.5, 3.7, 3.6)]
    result["rows"] = [repeats.combine(runs)]
    assert "| 2 | optimal | 3.60 (3 runs: 3.50-3.70) |" in report.markdown(result)


def test_every_result_records_where_it_came_from():
    from bench.provenance import provenance

    p = provenance({"devices": 6})
    assert p["git_commit"] and len(p["git_commit"]) == 40
    assert p["machine"]["cores"] >= 1 and p["machine"]["memory_bytes"] > 0 and p["machine"]["cpu"]
    assert p["versions"]["dask"] and p["settings"] == {"devices": 6} and p["command"]


def test_bench_top_measures_every_candidate_and_reports_the_winner():
    """``--top 3``: each candidate measured as one plan is; the row is the winner's, with every
    candidate, the planner's choice and by how much the winner beat it."""
    import workloads
    from bench import candidates
    from mcdask.model.kinds import homogeneous
    from mcdask.planning.planner import plan_top

    plans = plan_top(workloads.get("alexnet"), homogeneous("pi3", 6), 6, k=3)
    assert len(plans) == 3
    measured = {plans[0].id: 5.0, plans[1].id: 6.0, plans[2].id: 4.0}   # the runner-up wins on the farm
    seen, lines = [], []

    def measure(p):
        seen.append(p.id)
        return {"plan_id": p.id, "ips": 4 * measured[p.id], "ips_pi_speed": measured[p.id], "latency_p50_s": 0.5,
                "predicted_ips": p.predicted["ips"]}

    row = candidates.measure_all(plans, measure, lines.append)
    assert seen == [p.id for p in plans]
    assert row["plan_id"] == row["winner"] == plans[1].id and row["ips_pi_speed"] == 6.0
    assert row["planner_choice"] == plans[0].id and row["won_by"] == pytest.approx(6.0 / 5.0)
    assert [(c["plan_id"], c["measured_ips"]) for c in row["candidates"]] == list(measured.items())
    assert row["candidates"][1]["predicted_ips"] == plans[1].predicted["ips"]
    assert len(lines) == 2 * 3 + 1 and plans[1].id in lines[-1]
    # a tie goes to the planner's choice; one candidate wins by 1
    tie = candidates.choose(plans[:2], [{"ips_pi_speed": 5.0}, {"ips_pi_speed": 5.0}])
    assert tie["winner"] == plans[0].id and tie["won_by"] == 1.0
    with pytest.raises(ValueError, match="one measured row per candidate"):
        candidates.choose(plans, [])
    # a --top run is not the full run: it never takes bench's file name
    from click.testing import CliRunner

    from bench.cli import bench

    r = CliRunner().invoke(bench, ["--top", "3", "--name", "bench"])
    assert r.exit_code == 2 and "this run is partial" in r.output
    r = CliRunner().invoke(bench, ["--top", "3", "--within", "1"])
    assert r.exit_code == 2 and "--within" in r.output
