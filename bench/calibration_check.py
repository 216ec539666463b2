"""Does the farm's per-device calibration hold? Repeated farm-ups, each device timed after.

``python -m bench.calibration_check --farm-ups 10 --devices 6 --time-scale 4`` brings the farm
up (``mcdask farm up``, calibrating every device: ``cluster.closed_loop``) ``--farm-ups`` times.
After each, every device times whole AlexNet again ``--checks`` times, all devices at once, as
the calibration does and as ``tests/test_farm.py`` checks it (model built with the caps lifted,
then the sustained mean under the quotas). Per farm-up: how long it took, how long the
calibration took, its rounds, each device's calibrated and re-measured time over its target,
and the verdict of the farm test's bars on those timings (``verdict``; ``test_bars_pass`` in
the summary counts the farm-ups they hold in).
The last stdout line is one JSON object; ``--out NAME`` also writes it to the results folder.
"""

from __future__ import annotations

import json
import statistics
import time

import click

from bench.provenance import provenance, results_dir

#: the bars ``tests/test_farm.py::test_every_device_alexnet_time_is_within_bar_of_target`` holds
#: a farm to (why these: the comment there): each device's median time within DEVICE_BAR of the
#: farm's median, and the farm's median within FARM_BAR of the target
DEVICE_BAR = 0.15
FARM_BAR = 0.30


def _check_all(client, st: dict, checks: int) -> dict[str, list[float]]:
    """``checks`` times: every device's sustained AlexNet time, on the farm's runtime, over its
    target (TensorFlow's, times the runtime's speed-up on a litert farm), all at once."""
    from cluster import closed_loop, farm

    devices, backend = st["devices"], st.get("backend", "tensorflow")
    ratio = closed_loop.runtime_ratio(st)
    out: dict[str, list[float]] = {d["name"]: [] for d in devices}
    with closed_loop.reference_built(client, devices, 600, farm.set_caps, backend):
        for _ in range(checks):
            measured = closed_loop.time_devices(client, devices, 600)
            for d in devices:
                out[d["name"]].append(round(measured[d["name"]]["mean_s"] / (d["target_alexnet_s"] * ratio), 4))
    return out


def verdict(after: dict[str, list[float]]) -> dict:
    """The farm test's verdict on one farm-up's timings (its bars, without its allowance for
    the host's drift since farm up): each device's median over its target, the farm's median,
    the largest device's distance from it, and whether both bars hold."""
    ratios = {k: statistics.median(v) for k, v in after.items()}
    farm_ratio = statistics.median(ratios.values())
    device_off = max(abs(r / farm_ratio - 1) for r in ratios.values())
    return {"farm_ratio": round(farm_ratio, 4), "device_off": round(device_off, 4),
            "passes": device_off <= DEVICE_BAR and abs(farm_ratio - 1) <= FARM_BAR}


def one_farm_up(n: int, time_scale: float, checks: int, backend: str, log, span_s: float | None = None) -> dict:
    """Bring a farm up (calibration rounds of ``span_s``), time every device ``checks`` times,
    take it down."""
    from distributed import Client

    from cluster import farm
    from cluster.devices import FarmSpec

    t0 = time.perf_counter()
    st = farm.up(FarmSpec.uniform(n, "pi3"), time_scale=time_scale, backend=backend, calibration_span_s=span_s,
                 log=log)
    up_s = time.perf_counter() - t0
    try:
        with Client(st["scheduler"], timeout="60s", set_as_default=False) as c:
            after = _check_all(c, st, checks)
    finally:
        farm.down(log=lambda _m: None)
    cal = {d["name"]: d["calibration"] for d in st["devices"]}
    return {"farm_up_s": round(up_s, 1), "host_time_s": st["calibration"]["host_time_s"],
            "verification": st["verification"],
            "calibrated": {k: round(v["measured_s"] / v["target_s"], 4) for k, v in cal.items()},
            "iterations": {k: v["iterations"] for k, v in cal.items()},
            "share": {k: round(v["share"], 5) for k, v in cal.items()}, "after": after, "verdict": verdict(after)}


def summarise(runs: list[dict]) -> dict:
    """Spread of every re-measured device time over its target, over all farm-ups, and how many
    farm-ups the farm test's bars pass."""
    after = [r for run in runs for v in run["after"].values() for r in v]
    cal = [r for run in runs for r in run["calibrated"].values()]
    verdicts = [verdict(run["after"]) for run in runs]
    return {"after_min": min(after), "after_max": max(after),
            "after_within_5pct": sum(abs(r - 1) <= 0.05 for r in after), "after_n": len(after),
            "calibrated_within_5pct": sum(abs(r - 1) <= 0.05 for r in cal), "calibrated_n": len(cal),
            "test_bars_pass": sum(v["passes"] for v in verdicts), "farm_ups": len(runs),
            "farm_ratio_range": [min(v["farm_ratio"] for v in verdicts), max(v["farm_ratio"] for v in verdicts)],
            "device_off_max": max(v["device_off"] for v in verdicts),
            "calibration_s": [run["verification"]["seconds"] for run in runs],
            "farm_up_s": [run["farm_up_s"] for run in runs]}


@click.command()
@click.option("--farm-ups", default=10, show_default=True)
@click.option("--devices", default=6, show_default=True)
@click.option("--time-scale", default=4.0, show_default=True)
@click.option("--checks", default=3, show_default=True, help="timings of every device after each farm-up")
@click.option("--backend", type=click.Choice(["tensorflow", "litert"]), default="tensorflow", show_default=True,
              help="the farm's runtime (tests/test_farm.py brings up a tensorflow farm)")
@click.option("--calibration-span", "span_s", type=click.FloatRange(min=0.5), default=None,
              help="seconds each calibration round times a device [default: mcdask farm up's]")
@click.option("--out", default=None, help="also write OUT.json into the results folder")
def main(farm_ups, devices, time_scale, checks, backend, span_s, out) -> None:
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    runs = []
    for i in range(farm_ups):
        runs.append(one_farm_up(devices, time_scale, checks, backend, log, span_s))
        log(f"farm-up {i + 1}: up in {runs[-1]['farm_up_s']} s (calibration {runs[-1]['verification']['seconds']} s, "
            f"{runs[-1]['verification']['rounds']} rounds); after: {runs[-1]['after']}")
    result = {"command": f"python -m bench.calibration_check --farm-ups {farm_ups} --devices {devices} "
                         f"--time-scale {time_scale:g} --checks {checks} --backend {backend}"
                         + (f" --calibration-span {span_s:g}" if span_s else ""),
              "devices": devices, "backend": backend, "time_scale": time_scale, "summary": summarise(runs),
              "runs": runs, "provenance": provenance()}
    if out:
        folder = results_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{out}.json").write_text(json.dumps(result, indent=1))
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
