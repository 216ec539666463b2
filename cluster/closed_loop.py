"""Calibrate every farm device's compute quota in a closed loop on its own AlexNet time.

Each device builds whole AlexNet with the caps lifted (building under a 2 % share takes
minutes), then times it under its quotas from its task thread, as slices run: the sustained
mean of back-to-back inferences (``cluster.calibrate.measure``; a median of single calls under
a CFS quota can read 10x too fast). All devices are timed at the same time, in every round,
as a stream loads them. A device more than ``TOLERANCE`` off its target has its compute share
set to the median of what its rounds so far say would hit the target (share x measured/target:
a one-thread inference's time is inverse to its quota; the median, because a passing load on
this host moves a round's timing by 10-30 %), at most ``MAX_STEP`` a round and the farm's
shares within ``MAX_HOST_FRACTION`` of the host, and the round is repeated, up to
``MAX_ROUNDS`` rounds, until every device is within. A device off in the last round gets that
median too. Each device's record gets ``calibration`` (target, last measured time, share,
quota, rounds) and the farm's ``verification`` says how it went. A litert farm's devices time
LiteRT's AlexNet, against the target times LiteRT's speed-up over TensorFlow on this host
(``runtime_ratio``): the quota stays the one under which TensorFlow takes the target.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import calibrate, tls
from . import provision as pv
from .cgroups import Cgroups
from .devices import CALIBRATION_WORKLOAD
from .state import State

#: a device is calibrated when its sustained AlexNet time is this close to its target
TOLERANCE = 0.05
MAX_ROUNDS = 5
#: each timing spans at least this many seconds and calls: many CFS periods (20-56 ms here).
#: This host's own speed swings 1.74x (max/min) over 3-s windows, 1.49x over 10 s and 1.27x
#: over 30 s (``bench/results/host-noise.json``; two shorter runs: 1.39-1.45x, 1.18-1.31x and
#: 1.06-1.24x), so a round this short lands within the 5 % tolerance partly by luck; a farm for
#: measurements asks for longer rounds (``mcdask farm up --calibration-span``; the bench's farm:
#: ``bench.run.CALIBRATION_SPAN_S``)
MIN_SPAN_S = 3.0
MIN_CALLS = 5
#: at most this factor per correction, so one bad timing cannot throw a share far off
MAX_STEP = 2.0
#: the devices' compute shares together stay under this fraction of the host's cores: on a host
#: that is too busy no quota makes a device faster, and the shares would only grow
MAX_HOST_FRACTION = 0.8
Log = Callable[[str], None]


def on_each(client, devices: list[dict], timeout_s: float, fn, *args) -> dict[str, Any]:
    """``fn(*args)`` on every device's own worker at the same time; device name -> result."""
    futs = {d["name"]: client.submit(fn, *args, workers=[d["address"]], pure=False, allow_other_workers=False)
            for d in devices}
    return {name: f.result(timeout=timeout_s) for name, f in futs.items()}


@contextmanager
def reference_built(client, devices: list[dict], timeout_s: float, set_caps: Callable[[bool], Any],
                    backend: str = "tensorflow") -> Iterator:
    """Every device holds the reference model on ``backend`` (built with the caps lifted:
    ``set_caps(False)``, then ``set_caps(True)``) while the block runs, and lets it go after.
    LiteRT's flatbuffers are converted here, where TensorFlow is, and read by the devices."""
    from mcdask.runtime.timing import litert_flatbuffers

    flatbuffers = litert_flatbuffers(CALIBRATION_WORKLOAD) if backend == "litert" else None
    set_caps(False)
    try:
        on_each(client, devices, timeout_s, calibrate.prepare, CALIBRATION_WORKLOAD, 2, backend, flatbuffers)
    finally:
        set_caps(True)
    try:
        yield
    finally:
        on_each(client, devices, timeout_s, calibrate.release)


def time_devices(client, devices: list[dict], timeout_s: float, span_s: float = MIN_SPAN_S) -> dict[str, dict]:
    """One timing of every device at once under its quotas (``calibrate.measure``: the sustained
    mean of at least ``MIN_CALLS`` calls and ``span_s`` seconds); inside ``reference_built``."""
    return on_each(client, devices, timeout_s, calibrate.measure, CALIBRATION_WORKLOAD, MIN_CALLS, span_s)


def runtime_ratio(state: State | dict) -> float:
    """How much faster than TensorFlow the farm's runtime runs the reference on this host (1 for
    tensorflow; for litert, LiteRT's time over TensorFlow's from interleaved blocks of calls, or
    for a farm brought up before those, the ratio of the two medians): a device's quota is sized
    on TensorFlow's AlexNet time, so its own runtime's time there is the target times this. Of a
    farm's state, or of its status (``cluster.farm.status``)."""
    data = state.data if isinstance(state, State) else state
    cal = data.get("calibration") or {}
    if data.get("backend", "tensorflow") != "litert":
        return 1.0
    lite = cal["litert"]
    return lite["ratio"] if "ratio" in lite else lite["host_time_s"] / cal["host_time_s"]


def calibrate_devices(state: State, devices: list[dict], timeout_s: float, log: Log,
                      span_s: float = MIN_SPAN_S) -> dict:
    """Run the loop (module docstring) on ``devices`` (records of ``state``), each round timing
    every device for ``span_s`` seconds; returns the summary also stored as
    ``state.data["verification"]``."""
    t0 = time.perf_counter()
    cg = Cgroups.from_dict(state.data["cgroups"])
    backend, ratio = state.data.get("backend", "tensorflow"), runtime_ratio(state)
    targets = {d["name"]: d["target_alexnet_s"] * ratio for d in devices}
    rounds: dict[str, list[dict]] = {d["name"]: [] for d in devices}
    ceiling = MAX_HOST_FRACTION * (os.cpu_count() or 1) / len(state.data["devices"])
    with tls.client(state, "60s") as client, \
            reference_built(client, devices, timeout_s, lambda on: _set_all(cg, state, on), backend):
        for n in range(1, MAX_ROUNDS + 1):
            measured = time_devices(client, devices, timeout_s, span_s)
            for d in devices:
                m = measured[d["name"]]
                rounds[d["name"]].append({"share": d["cpu_share"], "measured_s": m["mean_s"], "calls": m["calls"],
                                          "elapsed_s": round(m["elapsed_s"], 3)})
            log(f"  round {n}: " + ", ".join(f"{d['name']} {measured[d['name']]['mean_s'] / targets[d['name']]:.3f}"
                                             for d in devices) + " of target")
            off = [d for d in devices if not _within(rounds[d["name"]][-1], targets[d["name"]])]
            if not off or n == MAX_ROUNDS:
                break
            for d in off:
                _set_share(cg, d, _next_share(rounds[d["name"]], targets[d["name"]], ceiling))
    for d in devices:
        _record(cg, d, rounds[d["name"]], ceiling, ratio)
    summary = {"statistic": f"sustained mean of back-to-back whole-{CALIBRATION_WORKLOAD} inferences (at least "
                            f"{MIN_CALLS} calls and {span_s:g} s after one warm-up call), every device at once",
               "span_s": span_s,
               "backend": backend, "runtime_ratio": ratio,
               "tolerance": TOLERANCE, "rounds": n, "max_rounds": MAX_ROUNDS,
               "within": sum(d["calibration"]["within_tolerance"] for d in devices), "devices": len(devices),
               "seconds": round(time.perf_counter() - t0, 1)}
    state.data["verification"] = summary
    state.save()
    return summary


def _within(r: dict, target_s: float) -> bool:
    return abs(r["measured_s"] / target_s - 1) <= TOLERANCE


def _next_share(rounds: list[dict], target_s: float, ceiling: float) -> float:
    """The median of the shares the rounds say would hit the target (each its share x
    measured/target; rounds more than ``MAX_STEP`` off are left out): a passing load on the
    host moves one round, not the median. At most ``MAX_STEP`` from the last round's share
    and at most ``ceiling``."""
    last = rounds[-1]["share"]
    usable = [r for r in rounds if 1 / MAX_STEP <= r["measured_s"] / target_s <= MAX_STEP] or rounds[-1:]
    share = statistics.median(r["share"] * r["measured_s"] / target_s for r in usable)
    return min(ceiling, last * MAX_STEP, max(last / MAX_STEP, share))


def _record(cg: Cgroups, d: dict, rounds: list[dict], ceiling: float, ratio: float) -> None:
    """Device ``d`` keeps its share if its last round was within the tolerance of its target
    (TensorFlow's times ``ratio``), else it gets ``_next_share`` (not timed again); its record
    says which, and every round. ``verified_alexnet_s`` is TensorFlow's time that stands for."""
    target, last = d["target_alexnet_s"] * ratio, rounds[-1]
    within = _within(last, target)
    if not within:
        _set_share(cg, d, _next_share(rounds, target, ceiling))
    d["verified_alexnet_s"] = last["measured_s"] / ratio
    d["calibration"] = {"target_s": target, "measured_s": last["measured_s"], "error": last["measured_s"] / target - 1,
                        "within_tolerance": within, "share": d["cpu_share"],
                        "share_from": "its last round" if within else "the median of its rounds' estimates",
                        "quota_us": d["cpu_quota_us"], "period_us": d["cpu_period_us"],
                        "iterations": len(rounds), "rounds": rounds}


def _set_share(cg: Cgroups, d: dict, share: float) -> None:
    d.update(pv.cpu_fields(min(1.0, share), d["runtime_share"]))
    pv.apply_caps(cg, d, True)


def _set_all(cg: Cgroups, state: State, on: bool) -> None:
    for d in state.data["devices"]:
        pv.apply_caps(cg, d, on)
