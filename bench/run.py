"""Measure the workloads on an emulated pi3 farm, n devices at a time, beside the predictions.

One farm of ``max(devices)`` pi3 devices is brought up (``cluster.farm``); for each n the
planner's plan for n devices is deployed on the first n workers (the rest hold nothing), a
fixed number of frames is streamed, and the run is measured: IPS, latency p50/p99, per-device
utilisation (the task stream's compute time over the run), the client's and scheduler's CPU
seconds per frame (the runtime's own cost), and the bounds of ``bench.metrics``.

With ``--time-scale K`` every device is K times faster with K times the bandwidth; IPS are
also reported divided by K (``ips_pi_speed``), which is what a real-speed farm would do if
every cost scales alike.

With ``top`` > 1, each (workload, n) measures up to ``top`` plans predicted within ``within``
of the best (``bench.candidates``) and reports the winner.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import psutil

import workloads
from mcdask.planning.planner import TOP_WITHIN
from mcdask.runtime.deploy import worker_addresses

from . import candidates, metrics, paper, repeats, row_length
from .backend_runs import default_profile

if TYPE_CHECKING:
    from mcdask.planning.planner import Strategy


@dataclass(frozen=True)
class Settings:
    workloads: tuple[str, ...]
    devices: tuple[int, ...]
    strategies: tuple[Strategy, ...] = ("optimal",)
    time_scale: float = 1.0
    frames: dict | None = None        # workload -> frames per run
    profile: str | None = None        # planning profile: "device", "farm" or "pi3" (see farm_profile);
                                      # None: each backend's own (default_profile)
    top: int = 1                      # plans measured per (workload, n): the planner's and runners-up
    within: float = TOP_WITHIN        # runners-up predicted within this of the best IPS
    repeats: int = 1                  # runs of each plan (bench.repeats): the row is the median run's
    min_seconds: float = 0.0          # each row streams at least this long at its predicted rate (bench.row_length)


DEFAULT_FRAMES = {"alexnet": 100, "vgg16": 24, "action": 100}
#: seconds each calibration round of the bench's farm times every device (``mcdask farm up
#: --calibration-span``): this host's speed swings 1.74x (max/min) over 3-s windows, 1.49x over
#: 10 s and 1.27x over 30 s (``bench/results/host-noise.json``)
CALIBRATION_SPAN_S = 15.0
QUICK_FRAMES = {"alexnet": 80, "vgg16": 16, "action": 80}


def _compute_s(rec: dict) -> list[float]:
    """A task stream record's compute spans, in seconds."""
    return [ss["stop"] - ss["start"] for ss in rec.get("startstops", ()) if ss["action"] == "compute"]


def _compute_by_worker(task_stream: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for rec in task_stream:
        out[rec["worker"]] = out.get(rec["worker"], 0.0) + sum(_compute_s(rec))
    return out


def _task_s_by_piece(task_stream: list[dict]) -> dict[str, dict]:
    """Each piece's measured task time: mean and count of its compute spans, by its label
    (the first part of the task key, ``mcdask.runtime.pieces.stage_label``)."""
    spans: dict[str, list[float]] = {}
    for rec in task_stream:
        key = rec.get("key")
        spans.setdefault(str(key[0] if isinstance(key, tuple) else key), []).extend(_compute_s(rec))
    return {label: {"mean_s": statistics.fmean(s), "median_s": statistics.median(s), "tasks": len(s)}
            for label, s in sorted(spans.items()) if s}


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _thread_cpu_s(pids: list[int]) -> dict[str, float]:
    """CPU seconds of the farm workers' threads, split into ``compute`` (the threads in a
    device's compute cgroup: the model) and ``runtime`` (Dask's own threads)."""
    from cluster.compute_threads import cpu_cgroup, is_compute

    out = {"compute": 0.0, "runtime": 0.0}
    for pid in pids:
        try:
            threads = psutil.Process(pid).threads()
        except psutil.Error:
            continue
        for t in threads:
            try:
                compute = is_compute(cpu_cgroup(t.id, pid))
            except OSError:  # the thread ended
                continue
            out["compute" if compute else "runtime"] += t.user_time + t.system_time
    return out


def _major_faults(pid: int) -> int | None:
    """Page faults process ``pid`` has waited on the disk for (``majflt``, /proc/PID/stat): a
    device near its memory limit has its libraries' pages taken and reads them again."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[9])   # the 12th field; fields[0] is the 3rd (state)


def measure_one(client, plan, profile, items, time_scale: float, scheduler_pid: int | None,
                caps=lambda on: None, worker_pids: dict[str, int] | None = None) -> dict:
    """Deploy ``plan``, stream ``items``, and return one row of figures."""
    from distributed import get_task_stream

    from mcdask.commands import stream_through
    from mcdask.planning.costmodel import evaluate
    from mcdask.profiling.worker import peak_rss_bytes, reset_peak
    from mcdask.runtime.weights import WeightsSource
    from mcdask.streaming.fit import live_memory

    w = workloads.get(plan.workload)
    sub = profile.subset(plan.devices)
    memory = live_memory(client)
    cost = evaluate(w, plan, sub)
    pids = [psutil.Process().pid] + ([scheduler_pid] if scheduler_pid else [])
    from mcdask.runtime.deploy import deploy, release

    pid_of = worker_pids or {}
    # every device lets go of the last row's slices first, so its peak is this plan's own (its
    # build, then the stream), and what it holds then is the resident baseline of a device that
    # has built and run slices before
    idle = release(client) if pid_of else {}
    for pid in pid_of.values():
        reset_peak(pid)
    caps(False)
    try:
        dep = deploy(client, plan, WeightsSource())
    finally:
        caps(True)
    devices_pids = [pid_of[dep.binding[d]] for d in plan.devices if dep.binding[d] in pid_of]
    cpu0, threads0 = _cpu_s(pids), _thread_cpu_s(devices_pids)
    faults0 = {d: _major_faults(pid_of[dep.binding[d]]) for d in plan.devices if dep.binding[d] in pid_of}
    with get_task_stream(client) as ts:
        records, summary = stream_through(client, plan, items, WeightsSource(), None, None, False,
                                          deployment=dep)
    runtime_cpu = _cpu_s(pids) - cpu0
    peaks = {d: peak for d in plan.devices
             if dep.binding[d] in pid_of and (peak := peak_rss_bytes(pid_of[dep.binding[d]])) is not None}
    faults = {d: f1 - f0 for d, f0 in faults0.items()
              if f0 is not None and (f1 := _major_faults(pid_of[dep.binding[d]])) is not None}
    idle_rss = {d: idle[dep.binding[d]] for d in plan.devices if dep.binding[d] in idle}
    limits = {d: usable for d in plan.devices if (usable := memory.get(dep.binding[d])) is not None}
    threads1 = _thread_cpu_s(devices_pids)
    worker_cpu = {k: threads1[k] - threads0[k] for k in threads1}
    wall = summary["wall_s"]
    addr_by_name = worker_addresses(client)
    compute = _compute_by_worker(ts.data)
    busy = {d: compute.get(addr_by_name.get(dep.binding[d], ""), 0.0) for d in plan.devices}
    util = metrics.utilisation(busy, wall)
    ips = summary["ips_steady"] or summary["ips"]   # steady state: pipeline fill and drain left out
    ips_pi = ips / time_scale
    whole = {d: sum(sub.kind_of(d).time_s(w.name, l) for l in w.layers) for d in plan.devices}
    compute_bound = metrics.compute_bound_ips(whole)
    placement_bound = metrics.placement_bound_ips(w, sub, len(plan.devices))
    link_bound = metrics.link_bound_ips(cost.busy_s)
    frames = max(summary["classified"], 1)
    row = {
        "workload": w.name, "devices": len(plan.devices), "strategy": plan.strategy, "plan_id": plan.id,
        "frames": summary["frames"], "classified": summary["classified"], "errors": summary["errors"],
        "ips": ips, "ips_pi_speed": ips_pi, "ips_wall": summary["ips"],
        "latency_p50_s": summary["latency_p50_s"], "latency_p99_s": summary["latency_p99_s"],
        "predicted_ips": cost.ips, "predicted_bottleneck": cost.bottleneck,
        "compute_bound_ips": compute_bound, "placement_bound_ips": placement_bound, "link_bound_ips": link_bound,
        "efficiency_compute": ips_pi / compute_bound, "efficiency_link": ips_pi / link_bound,
        "efficiency": metrics.efficiency(ips_pi, compute_bound, link_bound, *filter(None, [placement_bound])),
        "measured_over_predicted": ips_pi / cost.ips if cost.ips else None,
        # where a prediction misses: each device's task seconds per answered frame, measured and
        # as the profile has it (at Pi speed), and each piece's mean task time
        "device_busy_s_per_frame": {d: {"measured": busy[d] / frames * time_scale,
                                        "predicted": cost.compute_s.get(d, 0.0)} for d in plan.devices},
        "piece_task_s": _task_s_by_piece(ts.data),
        "utilisation": util, "utilisation_mean": statistics.fmean(util.values()),
        # how busy the busiest device was: ~1 means the runtime kept the bottleneck fed, and
        # any gap to the prediction is the profile's, not the runtime's
        "bottleneck_busy": max(util.values()),
        "runtime_cpu_s_per_frame": runtime_cpu / frames,
        "runtime_share_of_frame_time": (runtime_cpu / frames) * ips if ips else None,
        "worker_runtime_cpu_s_per_frame": worker_cpu["runtime"] / frames if devices_pids else None,
        "worker_compute_cpu_s_per_frame": worker_cpu["compute"] / frames if devices_pids else None,
        "worker_runtime_over_compute": (worker_cpu["runtime"] / worker_cpu["compute"]
                                        if devices_pids and worker_cpu["compute"] else None),
        "energy": metrics.energy_per_inference(util, ips_pi) if ips_pi > 0 else None,
        # each device's peak resident memory over its build and the stream, against what it may
        # use, and what it held before, with no slices (the resident baseline it plans with)
        "device_peak_rss_bytes": peaks, "device_idle_rss_bytes": idle_rss, "device_memory_limit_bytes": limits,
        "predicted_memory_bytes": dict(cost.memory_bytes),
        "device_major_faults": faults,   # over the stream
        "memory_within_limits": all(peaks[d] <= limits[d] for d in peaks if d in limits) if peaks else None,
        "plan": plan.to_dict(),
    }
    return row


PROFILES = ("device", "farm", "pi3")


def farm_runtime_ratio(farm_status: dict) -> float | None:
    """A litert farm's calibration: LiteRT's AlexNet time on this host over TensorFlow's, which
    its devices were calibrated on (``cluster.closed_loop.runtime_ratio``); None for another
    farm, or one not calibrated."""
    from cluster.closed_loop import runtime_ratio

    if farm_status.get("backend") != "litert":
        return None
    try:
        return runtime_ratio(farm_status)
    except (KeyError, TypeError):
        return None


def farm_profile(profile: str, names, workload_names=(), n_max: int = 12, log=print, *, client=None,
                 caps=lambda on: None, time_scale: float = 1.0, runtime_ratio: float | None = None):
    """The profile the bench plans with, for devices ``names``. All have the pi3's memory and
    link, running the configured backend (``mcdask.model.runtimes``: its measured baseline and
    build peak). Layer times: ``pi3``: the published
    Pi 3 ones; ``farm``: those rebalanced to this host's conv/dense split on the farm's runtime
    (on litert, with the farm's ``runtime_ratio``: its calibration's LiteRT over TensorFlow
    AlexNet time; None: from the host splits of both); ``device``: measured
    piece by piece on every farm device at once under its quotas (the median: the farm's devices
    are alike), as ``mcdask profile`` measures real devices. See ``bench.farm_profile``."""
    from cluster.devices import KINDS
    from mcdask.model import kinds as devices
    from mcdask.model import runtimes
    from mcdask.model.kinds import homogeneous
    from mcdask.streaming.controller import configured_runtime

    if profile not in PROFILES:
        raise ValueError(f"unknown bench profile {profile!r}; choose from {', '.join(PROFILES)}")
    runtime = configured_runtime()
    k = runtimes.on(devices.get("pi3"), runtime)
    if profile == "farm":
        from .farm_profile import CALIBRATION_WORKLOAD, farm_kind, host_split

        pi3_alexnet_s = KINDS["pi3"].alexnet_s
        assert pi3_alexnet_s is not None, "the pi3 kind is stated by its AlexNet time, not a CPU share"
        backend = "litert" if runtime.startswith("litert") else "tensorflow"
        split = host_split(list(workload_names), log=log, backend=backend)
        if backend == "litert" and runtime_ratio is None:
            tf = host_split([CALIBRATION_WORKLOAD], log=log)["workloads"][CALIBRATION_WORKLOAD]
            a = split["workloads"][CALIBRATION_WORKLOAD]
            runtime_ratio = (a["conv_s"] + a["dense_s"]) / (tf["conv_s"] + tf["dense_s"])
        costs = None
        if client is not None and len(names) > 1:
            from .farm_calls import farm_costs

            address = worker_addresses(client)
            costs = farm_costs(client, [address[n] for n in names], time_scale, backend, log)
        k = farm_kind(k, split, pi3_alexnet_s, n_max, runtime, runtime_ratio or 1.0, costs, KINDS["pi3"].runtime_share)
    elif profile == "device":
        from .farm_profile import device_kind

        address = worker_addresses(client)
        log(f"profiling {', '.join(workload_names)} on {len(names)} devices at once under their CPU quotas "
            "(the median of each piece's times)...")
        k = device_kind(client, [address[n] for n in names], k, list(workload_names), n_max, caps, time_scale,
                        log=log)
    return homogeneous(k, names=names, link=devices.link_for("pi3"))


def run(settings: Settings, scheduler: str | None = None, log=print) -> dict:
    """Bring up (or reuse, with ``scheduler``) a farm and measure every (workload, n, strategy)."""
    import dask
    from distributed import Client

    from cluster import farm
    from cluster.devices import FarmSpec
    from mcdask.planning.planner import plan as make_plan
    from mcdask.planning.planner import plan_top
    from mcdask.runtime.deploy import worker_names
    from mcdask.streaming.controller import configured_runtime
    from mcdask.streaming.sources import Feeder, open_source

    n_max = max(settings.devices)
    backend = dask.config.get("mcdask.worker.backend")
    profile = settings.profile or default_profile(backend)
    started = None
    if scheduler is None:
        log(f"bench: farm up, {n_max} pi3 devices, time scale {settings.time_scale}, backend {backend}")
        started = farm.up(FarmSpec.uniform(n_max, "pi3"), time_scale=settings.time_scale, backend=backend,
                          calibration_span_s=CALIBRATION_SPAN_S, log=log)
        scheduler = started["scheduler"]
    farm_status = farm.status()
    if farm_status.get("mode") == "netns" and farm_status.get("backend", "tensorflow") != backend:
        raise RuntimeError(f"the farm's devices put {farm_status.get('backend', 'tensorflow')}'s threads under their "
                           f"compute quota, not {backend}'s; bring it up with `mcdask farm up --backend {backend}`")
    state = farm.State.load()
    scheduler_pid = next((p["pid"] for p in (state.data["resources"].get("pids", []) if state else [])
                          if p.get("role") == "scheduler"), None)
    capped = farm_status.get("mode") == "netns"
    worker_pids = {d["name"]: d["pid"] for d in farm_status.get("devices", []) if d.get("pid")}

    def caps(on: bool) -> None:
        """Slices are built with the CPU cap lifted (a 2 % share makes that minutes), then
        the cap is restored before any frame is timed."""
        if capped:
            farm.set_caps(on)
    rows = []
    t_start = time.perf_counter()
    try:
        with dask.config.set({"distributed.comm.compression": dask.config.get("mcdask.compression")}), \
                Client(scheduler, timeout="60s") as client:
            names = worker_names(client)[:n_max]
            if len(names) < n_max:
                raise RuntimeError(f"the farm has {len(names)} workers, the bench needs {n_max}")
            full = farm_profile(profile, names, settings.workloads, n_max, log, client=client, caps=caps,
                                time_scale=settings.time_scale, runtime_ratio=farm_runtime_ratio(farm_status))
            broken = None  # set when the farm lost a device: later rows cannot run
            for name in settings.workloads:
                w = workloads.get(name)
                frames = (settings.frames or DEFAULT_FRAMES)[name]
                items = list(Feeder(w).items(open_source("synthetic", w), frames))
                for n in settings.devices:
                    prof = full.subset(names[:n])
                    for strategy in settings.strategies:
                        try:
                            plans = (plan_top(w, prof, n, settings.top, settings.within, strategy)
                                     if settings.top > 1 else [make_plan(w, prof, n, strategy)])
                        except Exception as e:  # infeasible: say so in the table
                            rows.append({"workload": name, "devices": n, "strategy": strategy,
                                         "feasible": False, "reason": str(e)})
                            log(f"  {name} n={n} {strategy}: infeasible: {e}")
                            continue
                        p = plans[0]
                        if broken:
                            rows.append({"workload": name, "devices": n, "strategy": strategy, "feasible": True,
                                         "failed": f"not run: {broken}", "plan_id": p.id})
                            continue
                        count = row_length.frames_for(frames, p.predicted.get("ips", 0) * settings.time_scale,
                                                      settings.min_seconds)
                        log(f"  {name} n={n} {strategy}: plan {p.id}, predicted {p.predicted.get('ips', 0):.2f} IPS, "
                            f"{count} frames")
                        once = partial(measure_one, client, profile=prof, items=row_length.cycled(items, count),
                                       caps=caps, time_scale=settings.time_scale, scheduler_pid=scheduler_pid,
                                       worker_pids=worker_pids)
                        measure = partial(repeats.measure_repeated, measure=once, repeats=settings.repeats, log=log)
                        try:
                            row = candidates.measure_all(plans, measure, log) if settings.top > 1 else measure(p)
                        except Exception as e:  # noqa: BLE001 - keep every other row of the run
                            left = worker_names(client)
                            lost = sorted(set(names) - set(left))
                            rows.append({"workload": name, "devices": n, "strategy": strategy, "feasible": True,
                                         "failed": f"{type(e).__name__}: {e}"[:500], "plan_id": p.id,
                                         "lost_devices": lost})
                            log(f"    FAILED: {type(e).__name__}: {e}" + (f"; devices lost: {lost}" if lost else ""))
                            if lost:
                                broken = f"the farm lost {', '.join(lost)} during {name} n={n} {strategy}"
                            continue
                        row["feasible"] = True
                        rows.append(row)
                        log(f"    measured {row['ips_pi_speed']:.2f} IPS at Pi speed "
                            f"(p50 {row['latency_p50_s']:.2f} s), efficiency {row['efficiency']:.2f}")
    finally:
        if started is not None:
            farm.down(log=log)
    runtime = configured_runtime()
    for r in rows:
        r["backend"], r["profile"] = runtime, profile
    reference = {w: paper.REFERENCE[w] for w in settings.workloads}
    return {"settings": {"workloads": list(settings.workloads), "devices": list(settings.devices),
                         "strategies": list(settings.strategies), "time_scale": settings.time_scale,
                         "profile": profile, "backend": runtime, "backends": [runtime],
                         **({"top": settings.top, "within": settings.within} if settings.top > 1 else {}),
                         **({"repeats": settings.repeats} if settings.repeats > 1 else {}),
                         "min_seconds": settings.min_seconds},
            "farm": {k: farm_status.get(k) for k in ("mode", "cpu_capped", "network_shaped", "calibration",
                                                      "not_capped_reason", "time_scale")},
            "machine": {"cores": psutil.cpu_count(), "memory_bytes": psutil.virtual_memory().total},
            "wall_s": time.perf_counter() - t_start, "rows": rows, "reference": reference}

