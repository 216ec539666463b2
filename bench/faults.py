"""Faults against a running stream on the emulated farm, one at a time, and what comes out.

``python -m bench.faults [--time-scale 4] [--frames 900] [--name NAME] [--out-dir DIR]`` brings up a farm of 6
pi3 devices, and for each scenario runs ``mcdask run`` (AlexNet, synthetic frames, ``--check``)
as its own client process and applies the fault once a third of the frames are answered:

* ``kill``, ``freeze``, ``cut`` of the sole holder of a piece of the starting plan (any device
  if no piece has a sole holder); the device is restored (removed, thawed, healed) after;
* ``join``: 2 devices join a 2-device farm (the others are removed first);
* ``scheduler``: the scheduler is killed (last: it ends the farm).

Per scenario it reports whether every frame came out once, in order and equal to the unsplit
model, the longest gap between answers, how long after the fault the first answer came, and
how long until throughput (2 s windows, at Pi speed) reached 90 % of the new plan's
prediction. ``tests/test_farm_adaptation.py`` runs the same scenarios, shorter.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from bench.provenance import OUT_DIR_HELP, PartialRunError, provenance, result_name, results_dir


def sole_holder(plan) -> str:
    """A device that alone holds some piece of ``plan`` (the heaviest such piece), else the
    last device."""
    for st in reversed(plan.stages):
        for sh in st.shards:
            if len(sh.devices) == 1:
                return sh.devices[0]
    return plan.devices[-1]


def stream_with_fault(scheduler: str, profile: Path, frames: int, fault_at: int, fault: Callable[[], object],
                      out: Path, time_scale: float, timeout_s: float = 900) -> dict:
    """Run ``mcdask run`` and call ``fault`` once ``fault_at`` answers are in ``out``."""
    cmd = [sys.executable, "-m", "mcdask.cli", "run", "--scheduler", scheduler, "--workload", "alexnet",
           "--frames", str(frames), "--profile", str(profile), "--out", str(out), "--check", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.monotonic() + timeout_s
    while not out.exists() or len(out.read_text().splitlines()) < fault_at:
        if proc.poll() is not None:
            assert proc.stderr is not None, "stderr is a pipe (Popen stderr=PIPE)"
            raise RuntimeError(f"mcdask run ended before frame {fault_at}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"mcdask run did not answer {fault_at} frames within {timeout_s:.0f} s")
        time.sleep(0.05)
    fault()
    t_fault_wall = time.monotonic()
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    exited_after = time.monotonic() - t_fault_wall
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    try:
        summary = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        summary = {}
    return figures(lines, summary, fault_at, time_scale) | {
        "exit_code": proc.returncode, "exited_after_fault_s": round(exited_after, 2),
        "stderr_lines": [x for x in stderr.splitlines() if x.strip()][-20:]}


def figures(lines: list[dict], summary: dict, fault_at: int, time_scale: float) -> dict:
    ok = [x for x in lines if x["status"] == "ok"]
    t_fault = lines[fault_at - 1].get("t_s", 0.0) if len(lines) >= fault_at else None
    times = [x["t_s"] for x in ok]
    gaps = [b - a for a, b in zip(times, times[1:])]
    after = [t for t in times if t_fault is not None and t > t_fault]
    switched = [e for e in summary.get("events", []) if e["kind"] == "switched"]
    target = switched[-1].get("predicted_ips") if switched else None
    recovered = None
    if target and t_fault is not None:
        t = t_fault
        while t + 2 <= (times[-1] if times else 0):
            n = sum(1 for x in times if t < x <= t + 2)
            if n / 2 / time_scale >= 0.9 * target:
                recovered = round(t + 2 - t_fault, 2)
                break
            t += 0.5
    return {
        "frames": len(lines), "every_frame_once_in_order": [x["frame"] for x in lines] == list(range(len(lines))),
        "statuses": {s: sum(x["status"] == s for x in lines) for s in {x["status"] for x in lines}},
        # what went wrong with the frames that did not answer (the first few), for people and tests
        "errors": [x.get("error") for x in lines if x["status"] == "error"][:5],
        "equal_to_unsplit": summary.get("equal"), "longest_gap_s": round(max(gaps, default=0.0), 3),
        "first_answer_after_fault_s": round(after[0] - t_fault, 3) if after else None,
        "new_plan_predicted_ips": target, "recovered_90pct_within_s": recovered,
        "ips_after_fault_pi_speed": (round((len(after) - 1) / (after[-1] - after[0]) / time_scale, 2)
                                     if len(after) > 2 else None),
        "switches": summary.get("switches"), "stopped": summary.get("stopped"),
        "events": [f"{e['t_s']:.2f} {e['message']}" for e in summary.get("events", [])],
    }


def run(time_scale: float, frames: int, verify: bool, out_dir: Path, log=print,
        only: tuple[str, ...] = ("kill", "freeze", "cut", "join", "scheduler")) -> dict:
    from distributed import Client

    import workloads
    from bench.run import farm_profile, farm_runtime_ratio
    from cluster import farm, faults, membership
    from cluster.devices import FarmSpec
    from cluster.errors import FarmError
    from mcdask.commands import plan_book
    from mcdask.runtime.deploy import worker_names

    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"faults: farm up, 6 pi3 devices, time scale {time_scale}")
    st = farm.up(FarmSpec.uniform(6, "pi3"), time_scale=time_scale, verify=verify,
                 host_time_s=None if verify else 0.02, log=log)
    sched = st["scheduler"]
    results: dict[str, dict] = {}
    fault_at = frames // 3
    try:
        profile = out_dir / "farm-profile.json"
        with Client(sched, timeout="60s", set_as_default=False) as c:
            names = worker_names(c)
            # an uncalibrated farm (verify=False) has no speed to measure costs against
            farm_profile("farm", names, ("alexnet",), 12, log=log, client=c if verify else None,
                         time_scale=time_scale, runtime_ratio=farm_runtime_ratio(st)).save(profile)
        start = plan_book(workloads.get("alexnet"), str(profile)).plan_for(tuple(names))
        victim = sole_holder(start)
        restore: dict[str, Callable[[str], object]] = {
            "kill": lambda d: membership.remove(d, log=lambda m: None), "freeze": faults.thaw, "cut": faults.heal}
        for action in ("kill", "freeze", "cut"):
            if action not in only:
                continue
            log(f"  {action} {victim} (plan {start.id}) at frame {fault_at} of {frames}")
            results[action] = {"device": victim, **stream_with_fault(
                sched, profile, frames, fault_at, functools.partial(getattr(faults, action), victim),
                out_dir / f"{action}.jsonl", time_scale)}
            try:
                restore[action](victim)
            except FarmError:   # a cut of over 30 s ends the worker (Dask's TCP timeout): it is gone
                membership.remove(victim, log=lambda m: None)
                results[action]["device_died"] = True
            log(f"    {_line(results[action])}")
            if action == "kill" or results[action].get("device_died"):   # the next faults: a device still there
                with Client(sched, timeout="60s", set_as_default=False) as c:
                    names = worker_names(c)
                start = plan_book(workloads.get("alexnet"), str(profile)).plan_for(tuple(names))
                victim = sole_holder(start)
            time.sleep(3)   # heartbeats of the restored device settle before the next stream
        if "join" in only:
            with Client(sched, timeout="60s", set_as_default=False) as c:
                names = worker_names(c)
            for name in names[2:]:
                membership.remove(name, log=lambda m: None)
            log(f"  join: 2 devices join {', '.join(names[:2])} at frame {fault_at} of {frames}")
            results["join"] = stream_with_fault(sched, profile, frames, fault_at,
                                                lambda: membership.add(2, log=lambda m: None),
                                                out_dir / "join.jsonl", time_scale)
            log(f"    {_line(results['join'])}")
        if "scheduler" in only:
            state = farm.State.load()
            if state is None:
                raise FarmError("the farm's state file is gone: no scheduler pid to kill")
            pid = next(p["pid"] for p in state.data["resources"]["pids"] if p["role"] == "scheduler")
            log(f"  scheduler: kill -9 at frame {fault_at}")
            results["scheduler"] = stream_with_fault(sched, profile, frames, fault_at,
                                                     lambda: os.kill(pid, signal.SIGKILL),
                                                     out_dir / "scheduler.jsonl", time_scale)
            log(f"    exit {results['scheduler']['exit_code']} after {results['scheduler']['exited_after_fault_s']} s")
    finally:
        farm.down(log=lambda m: None)
    return {"time_scale": time_scale, "frames": frames, "fault_at": fault_at, "verified": verify,
            "scenarios": results}


def _line(r: dict) -> str:
    return (f"once in order: {r['every_frame_once_in_order']}, equal: {r['equal_to_unsplit']}, statuses "
            f"{r['statuses']}, longest gap {r['longest_gap_s']} s, 90 % of {r['new_plan_predicted_ips']} IPS "
            f"after {r['recovered_90pct_within_s']} s, {r['switches']} switches")


@click.command()
@click.option("--time-scale", type=float, default=4.0, show_default=True)
@click.option("--frames", type=click.IntRange(30), default=900, show_default=True)
@click.option("--verify/--no-verify", default=True, show_default=True, help="calibrate the farm (as farm up)")
@click.option("--only", multiple=True, type=click.Choice(["kill", "freeze", "cut", "join", "scheduler"]))
@click.option("--name", "--out", "name", default=None,
              help="file stem [default: faults-x4 for the default run, else faults-xK-...]")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=OUT_DIR_HELP)
def main(time_scale, frames, verify, only, name, out_dir):
    """Kill, freeze and cut a device, join two, kill the scheduler: what comes out."""
    import tempfile

    full = (time_scale, frames, verify) == (4.0, 900, True) and not only
    try:
        name = result_name("faults-x4", full, name, f"faults-x{time_scale:g}-f{frames}-{'-'.join(only) or 'all'}")
    except PartialRunError as e:
        raise click.UsageError(str(e)) from None
    result = run(time_scale, frames, verify, Path(tempfile.mkdtemp(prefix="mcdask-faults-")),
                 log=lambda m: click.echo(m, err=True), **({"only": only} if only else {}))
    result["provenance"] = provenance()
    out_dir = results_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    click.echo(f"written: {out_dir / name}.json")


if __name__ == "__main__":
    main()
