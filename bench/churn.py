"""Musical chairs on the emulated farm: AlexNet streams on N pi3 devices while devices are
killed, added, frozen and thawed; IPS over time with the events marked (PNG and JSON).

``python -m bench.churn [--devices 6] [--time-scale 1] [--phase-s 40] [--name NAME]`` brings up a
farm (or uses one with ``--scheduler``), streams synthetic frames through the controller
(``mcdask.streaming.controller``), and at every ``phase-s`` seconds applies the next fault of the
scenario with ``cluster.faults`` / ``cluster.membership``. Reported per phase: steady IPS
at Pi speed beside the plan's prediction, the longest gap between answers, and how long after
the fault throughput came back to 90 % of the new plan's prediction.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import click

import workloads
from bench.provenance import OUT_DIR_HELP, PartialRunError, provenance, result_name, results_dir

#: (action, device): the device index is into the farm's device names at the start
SCENARIO = (("kill", -1), ("add", None), ("freeze", 1), ("thaw", 1))


def _apply(action: str, device: str | None, log) -> str:
    from cluster import faults, membership

    if action == "add":
        recs = membership.add(1, log=log)
        return recs[0]["name"]
    if device is None:
        raise ValueError(f"fault {action!r} needs a device")
    getattr(faults, action)(device)
    return device


def run(n: int, time_scale: float, phase_s: float, scheduler: str | None, log=print) -> dict:
    import dask
    from distributed import Client

    from bench.run import farm_profile
    from cluster import farm
    from cluster.devices import FarmSpec
    from mcdask.commands import stream_through
    from mcdask.runtime.deploy import deploy, worker_names
    from mcdask.runtime.weights import WeightsSource
    from mcdask.streaming.controller import PlanBook, profile_for
    from mcdask.streaming.events import EventLog
    from mcdask.streaming.sources import Feeder, open_source

    w = workloads.get("alexnet")
    started = None
    if scheduler is None:
        log(f"churn: farm up, {n} pi3 devices, time scale {time_scale}")
        started = farm.up(FarmSpec.uniform(n, "pi3"), time_scale=time_scale, log=log)
        scheduler = started["scheduler"]
    faults_done: list[dict] = []
    try:
        with dask.config.set({"distributed.comm.compression": dask.config.get("mcdask.compression")}), \
                Client(scheduler, timeout="60s") as client:
            names = worker_names(client)[:n]
            plans = PlanBook(w, profile_for(farm_profile("pi3", names)))
            home = plans.plan_for(tuple(names))
            farm.set_caps(False)
            try:
                dep = deploy(client, home, WeightsSource())
            finally:
                farm.set_caps(True)
            predicted = {len(names): home.predicted.get("ips")}
            events = EventLog(clock=time.perf_counter)
            stop = threading.Event()

            def scenario() -> None:
                for action, idx in SCENARIO:
                    if stop.wait(phase_s):
                        return
                    device = names[idx] if idx is not None else None
                    t = events.since_start_s()
                    try:
                        name = _apply(action, device, lambda m: None)
                        faults_done.append({"t_s": round(t, 3), "action": action, "device": name})
                        log(f"  t={t:.1f} s: {action} {name}")
                    except Exception as e:  # noqa: BLE001 - the run goes on; the JSON says what failed
                        faults_done.append({"t_s": round(t, 3), "action": action, "device": device,
                                            "failed": str(e)})
                        log(f"  t={t:.1f} s: {action} {device} FAILED: {e}")

            frames_needed = int(max(20.0, 1.5 * (home.predicted.get("ips") or 5) * time_scale)
                                * phase_s * (len(SCENARIO) + 1))
            items = Feeder(w).items(open_source("synthetic", w), None)
            deadline = time.perf_counter() + phase_s * (len(SCENARIO) + 1)

            def until_done():
                for item in items:
                    if time.perf_counter() > deadline or item.frame >= frames_needed:
                        return
                    yield item

            thread = threading.Thread(target=scenario, daemon=True)
            thread.start()
            try:
                records, summary = stream_through(client, home, until_done(), WeightsSource(), None, None, False,
                                                  deployment=dep, plans=plans, events=events)
            finally:
                stop.set()
                thread.join(timeout=phase_s)
            for ev in summary["events"]:
                if ev["kind"] == "switched":
                    try:
                        p = plans.plan_for(tuple(ev["devices"]))
                        predicted[len(ev["devices"])] = p.predicted.get("ips")
                    except Exception:  # noqa: BLE001 - the home plan is not in the book's cache
                        pass
            done = [r.done_at - events.origin for r in records if r.status == "ok"]
            once_in_order = [r.frame for r in records] == list(range(len(records)))
    finally:
        if started is not None:
            farm.down(log=log)
    return analyse(done, summary, faults_done, predicted, time_scale, phase_s, n, once_in_order)


def analyse(done: list[float], summary: dict, faults: list[dict], predicted: dict, time_scale: float,
            phase_s: float, n: int, once_in_order: bool) -> dict:
    """IPS over time (2 s bins, at Pi speed), gaps, and recovery after each fault."""
    bins: dict[int, int] = {}
    for t in done:
        bins[int(t // 2)] = bins.get(int(t // 2), 0) + 1
    series = [{"t_s": 2 * b + 1, "ips_pi_speed": bins.get(b, 0) / 2 / time_scale}
              for b in range(int(max(done, default=0) // 2) + 1)]
    gaps = [(b - a, a) for a, b in zip(done, done[1:])]
    after = []
    switched = [e for e in summary["events"] if e["kind"] == "switched"]
    for f in faults:
        later = [t for t in done if t > f["t_s"]]
        gap = max([g for g, a in gaps if f["t_s"] - 1 <= a <= f["t_s"] + phase_s] or [0.0])
        sw = next((e for e in switched if e["t_s"] >= f["t_s"]), None)
        target = predicted.get(len(sw["devices"])) if sw else None
        recovered = None
        if target:
            for s in series:
                if s["t_s"] > f["t_s"] and s["ips_pi_speed"] >= 0.9 * target:
                    recovered = round(s["t_s"] - f["t_s"], 1)
                    break
        after.append({**f, "longest_gap_s": round(gap, 3), "first_answer_after_s":
                      round(later[0] - f["t_s"], 3) if later else None,
                      "new_plan_predicted_ips": target, "recovered_90pct_after_s": recovered})
    return {"devices": n, "time_scale": time_scale, "phase_s": phase_s, "summary": {
                k: summary.get(k) for k in ("frames", "classified", "errors", "resubmitted", "switches",
                                            "longest_gap_s", "latency_p50_s", "latency_p99_s", "stopped")},
            "events": summary["events"], "faults": after, "ips_series": series, "predicted_ips": predicted,
            "every_frame_once_in_order": once_in_order}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    s = result["ips_series"]
    ax.plot([p["t_s"] for p in s], [p["ips_pi_speed"] for p in s], lw=1.5, label="measured (2 s bins)")
    for f in result["faults"]:
        ax.axvline(f["t_s"], color="tab:red", ls="--", lw=1)
        ax.text(f["t_s"], ax.get_ylim()[1] * 0.95, f" {f['action']} {f['device']}", color="tab:red", fontsize=8,
                va="top")
    for e in result["events"]:
        if e["kind"] == "switched":
            ax.axvline(e["t_s"], color="tab:green", lw=0.8, alpha=0.7)
    ax.set_xlabel("seconds since the stream began (green: plan switched)")
    ax.set_ylabel("IPS at Pi speed")
    ax.set_title(f"AlexNet on {result['devices']} emulated pi3 devices, time scale {result['time_scale']:g}: "
                 "kill, add, freeze, thaw")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--devices", "n", type=click.IntRange(2, 12), default=6, show_default=True)
@click.option("--time-scale", type=float, default=1.0, show_default=True)
@click.option("--phase-s", type=float, default=40.0, show_default=True, help="seconds between faults")
@click.option("--scheduler", default=None, help="use a farm that is already up")
@click.option("--name", "--out", "name", default=None,
              help="file stem [default: churn for the default run, else churn-nN-xK]")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=OUT_DIR_HELP)
def main(n, time_scale, phase_s, scheduler, name, out_dir):
    """AlexNet on the farm through kill, add, freeze and thaw; IPS over time."""
    full = (n, time_scale, phase_s) == (6, 1.0, 40.0)
    try:
        name = result_name("churn", full, name, f"churn-n{n}-x{time_scale:g}")
    except PartialRunError as e:
        raise click.UsageError(str(e)) from None
    result = run(n, time_scale, phase_s, scheduler, log=lambda m: click.echo(m, err=True))
    result["provenance"] = provenance()
    out_dir = results_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    plot(result, out_dir / f"{name}.png")
    for f in result["faults"]:
        click.echo(f"{f['action']:>6} {f['device']} at {f['t_s']:.1f} s: longest gap {f['longest_gap_s']:.2f} s, "
                   f"first answer after {f['first_answer_after_s']} s, 90 % of the new plan's "
                   f"{f['new_plan_predicted_ips']} IPS after {f['recovered_90pct_after_s']} s")
    click.echo(f"written: {out_dir / name}.json, {out_dir / name}.png")


if __name__ == "__main__":
    main()
