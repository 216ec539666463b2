"""Measure a running Dask cluster into a profile (schema ``mcdask.profile/1``), cache it, plan on it.

``profile_cluster(client, ["alexnet"])`` returns a :class:`mcdask.model.profile.Profile` with one
device kind per worker (kind name = device name = worker name):

* **Compute**, in each worker process (``client.run`` of a module-level function, off the
  worker's event loop; TensorFlow threads from ``mcdask.worker.intra-op-threads`` as the
  slice plugin sets them): for every layer of each workload, a one-layer slice
  ``Slice(SliceSpec(workload, i, i + 1, units))`` is built, called ``warmup`` times, then timed
  as the runtime will see it: the sustained mean of back-to-back calls (at least ``repeats``
  calls and ``span_s`` seconds, at most ``budget_s`` once two calls are done;
  ``mcdask.runtime.timing.sustained_mean``, the statistic the farm calibrates its devices on)
  and freed. Under a CPU quota (a farm device's CFS quota, a container's) a single call can
  finish inside one period's quota at full speed: the median of single calls read conv1 at
  4 ms where the device sustains 41 ms. Dense layers
  are also timed as every shard size the planner may use with the cluster's worker count
  (``shard_units(U, k)`` for ``k = 2..n``: both ``floor(U/k)`` and ``ceil(U/k)``), stored as
  ``shard_time_s[workload][layer][units]``. Layers that read a workload input get it as uint8,
  as the runtime sends frames. One ``client.run`` per piece and round: workers on different
  hosts time it at the same time, workers sharing a host one after the other (solo times;
  see *Shared hosts*). Each run of layers the planner never cuts inside (``cells``: VGG16's
  blocks, AlexNet's conv-pool groups) is also timed as one slice, and its layers' times scaled
  to sum to it (``scale_to_cells``). Each time holds one call's fixed cost, which a piece of k
  layers pays once: the fastest one-layer time measured stands for it (``split_call_cost``,
  ``measured.call_s``) and moves from every layer and shard time into ``task_overhead_s``.
* **Memory**: ``layer_memory_bytes`` is the growth of the worker's resident set (RSS, after
  ``gc.collect()``) from before building the slice to after timing it, at least the
  parameter bytes; ``measured.peak_build_bytes`` the peak RSS growth where the kernel lets us
  reset the high-water mark. A piece whose estimated build peak (RSS now + ``BUILD_PEAK_FACTOR``
  x its parameter bytes) would exceed the worker's usable memory is not built: it is recorded
  under ``measured.skipped``, and a dense layer that does not fit whole gets a whole-layer time
  extrapolated from its measured shards (``sources`` says so). Usable memory is the smallest of
  the worker's ``memory_limit`` times Dask's pause fraction (above it Dask pauses the worker),
  the cgroup memory limit and physical RAM. **Baseline** is the worker process's RSS after
  importing TensorFlow, setting its threads and running one tiny ``tf.function`` (after
  ``gc.collect()``, before any profiling slice is built), minus the parameter bytes of any
  mcdask slices the worker already holds.
* **Per-task overhead** (``measure_task_overhead``): ``mcdask.streaming.stream.Stream`` itself sends
  frames through 1-stage and 2-stage plans of pieces that compute nothing. ``task_overhead_s``
  of a worker is its process's CPU seconds per such task (Dask's messaging, (de)serialisation,
  feed merging: what a task costs beyond its layers); ``profile.host_task_overhead_s`` and
  ``host_frame_overhead_s`` are the client's (and a separate scheduler process's) CPU seconds
  per task and per frame, on their host. The isolated no-op round trip is kept for people.
* **Shared hosts**: every device records its host; ``profile.host_cores`` holds the cores of
  each host. Compute is timed solo (workers on one host one at a time, different hosts at
  once); the cost model then shares each host's cores between its devices and the Dask
  overhead of the scheduler and client running there (``mcdask.planning.costmodel``). Load from other
  programs on the host is not modelled: it shows up as a lower measured throughput.
* **Links**: real transfers. For every ordered pair of workers and each payload size, a task
  on A produces a uint8 array and a task restricted to B consumes it; the transfer time is
  the ``transfer`` start/stop of the consumer in the scheduler's task stream. From the client,
  ``client.scatter(x, workers=[B], direct=True)`` is timed. Each pair (both directions
  together) and the client-worker links are fitted by least squares to
  ``latency_s + bytes / bandwidth_Bps`` (latency clamped at 0: refitted through the origin);
  the default link is the fit of all worker-pair points. The medians per size are kept in
  ``profile.measured["link_samples"]``.

``cached_profile`` / ``auto_plan`` keep measured profiles under ``mcdask.profile.cache-dir``
(default ``~/.cache/mcdask``), keyed by the sorted worker names, their memory limits and
thread counts, and the mcdask version.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import workloads
from mcdask.errors import ProfileError
from mcdask.model.fit import line
from mcdask.model.profile import CLIENT, Device, DeviceKind, Link, Profile
from mcdask.planning.pieces import shard_units
from mcdask.profiling import Progress
from mcdask.profiling.links import LINK_SIZES, fit_link, measure_links, medians
from mcdask.profiling.overhead import measure_task_overhead
from mcdask.profiling.worker import time_piece, worker_facts

DEFAULT_REPEATS = 3
DEFAULT_SPAN_S = 1.5
DEFAULT_BUDGET_S = 6.0


def workers_by_name(client) -> dict[str, dict]:
    """worker name -> scheduler info (with its address), in the runtime's name order."""
    from mcdask.runtime.deploy import worker_names

    info = client.scheduler_info(n_workers=-1)["workers"]
    by_name = {str(w.get("name", a)): {**w, "address": a} for a, w in info.items()}
    return {n: by_name[n] for n in worker_names(client)}




def planner_shard_sizes(layer, n_devices: int) -> list[int]:
    """Every shard size (units) the planner may give ``layer`` on up to ``n_devices`` devices."""
    if not layer.splittable:
        return []
    sizes = {b - a for k in range(2, min(n_devices, layer.units) + 1) for a, b in shard_units(layer.units, k)}
    return sorted(sizes)




def split_call_cost(layer_time: dict[str, dict[str, float]], shard_time: dict[str, dict[str, dict[int, float]]]
                    ) -> tuple[float, dict, dict]:
    """``(call_s, layer_time, shard_time)``: the fixed cost of one call of a piece, and the
    one-layer times without it. Each layer is timed as a one-layer slice, so each time holds a
    call's fixed cost (feeds assembled, the function or interpreter dispatched, outputs copied)
    that a piece of k layers pays once, not k times: on the farm at Pi speed AlexNet's 12 layer
    times summed to 0.604 s where the whole model ran as one task in 0.49-0.55 s. The fastest
    one-layer call measured stands for that cost (a flatten or pooling layer, whose compute is a
    reshape or a few comparisons: 9-10 ms at Pi speed); the planner adds it once per piece
    (``task_overhead_s``). Times stay at least 0."""
    times = [t for w in layer_time.values() for t in w.values()]
    if not times:
        return 0.0, layer_time, shard_time
    call_s = min(times)
    return (call_s,
            {w: {name: max(t - call_s, 0.0) for name, t in ls.items()} for w, ls in layer_time.items()},
            {w: {name: {u: max(t - call_s, 0.0) for u, t in us.items()} for name, us in ls.items()}
             for w, ls in shard_time.items()})


def cells(workload) -> list[tuple[int, int]]:
    """The runs of more than one layer that the planner never cuts inside (between consecutive
    cut points of ``mcdask.planning.search.allowed_cuts``): each is also timed as one slice."""
    from mcdask.planning.search import allowed_cuts

    cuts = allowed_cuts(workload)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b - a > 1]


def scale_to_cells(workload, layer_time: dict[str, float], cell_time: dict[tuple[int, int], float],
                   call_s: float) -> dict[str, float]:
    """``layer_time`` (one call's cost already out) with each cell's layers scaled to sum to the
    cell's own time less one call: the runtime runs a cell's layers as one call, not as one
    call each. On the farm at Pi speed a cell as one slice took 0.81-0.91x its layers' sum for
    AlexNet's conv-pool groups and 0.96-1.02x for VGG16's blocks (``mcdask bench``, 2026-12-02)."""
    out = dict(layer_time)
    for (a, b), t in cell_time.items():
        names = [workload.layers[i].name for i in range(a, b)]
        total = sum(out[n] for n in names)
        if total > 0:
            for n in names:
                out[n] *= max(t - call_s, 0.0) / total
    return out


def dense_model(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """(fixed_s, s_per_weight_byte) through (param bytes, seconds) of measured dense pieces, or
    None when the line is not meaningful (fewer than two sizes, a negative slope or intercept)."""
    if len({b for b, _ in points}) < 2:
        return None
    slope, fixed = line(points)
    return (fixed, slope) if slope > 0 and fixed >= 0 else None


def kind_for(name: str, facts: dict, pieces: dict, overhead: dict, settings: dict,
             cell_pieces: dict | None = None) -> DeviceKind:
    """One device's DeviceKind from its facts, ``pieces[(workload, layer index, units)]`` and
    ``cell_pieces[(workload, start, end)]`` (``cells``, each timed as one slice)."""
    layer_time: dict[str, dict[str, float]] = {}
    shard_time: dict[str, dict[str, dict[int, float]]] = {}
    memory: dict[str, dict[str, int]] = {}
    sources: dict[str, str] = {}
    skipped: dict[str, str] = {}
    peaks: dict[str, int] = {}
    dense_points: list[tuple[int, float]] = []
    for (wname, index, units), r in sorted(pieces.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        layer = workloads.get(wname).layers[index]
        label = f"{wname}/{layer.name}" + ("" if units is None else f"[{units}]")
        if "skipped" in r:
            skipped[label] = r["skipped"]
            continue
        if r.get("peak_build_bytes") is not None:
            peaks[label] = r["peak_build_bytes"]
        if layer.kind == "dense":
            dense_points.append((r["param_bytes"], r["mean_s"]))
        if units is None:
            layer_time.setdefault(wname, {})[layer.name] = r["mean_s"]
            memory.setdefault(wname, {})[layer.name] = max(r["memory_bytes"], r["param_bytes"])
        else:
            shard_time.setdefault(wname, {}).setdefault(layer.name, {})[units] = r["mean_s"]
    dense = dense_model(dense_points)
    # whole dense layers that did not fit: extrapolate from their shards (or the dense line)
    for (wname, index, units), r in sorted(pieces.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        if units is not None or "skipped" not in r:
            continue
        layer = workloads.get(wname).layers[index]
        shards = sorted(shard_time.get(wname, {}).get(layer.name, {}).items())
        if len(shards) >= 2:
            line = fit_link([(u, t) for u, t in shards])    # t = fixed + units / rate: same algebra
            layer_time.setdefault(wname, {})[layer.name] = line.time_s(layer.units)
            how = f"least-squares line through its {len(shards)} measured shards, at {layer.units} units"
        elif len(shards) == 1:
            u, t = shards[0]
            layer_time.setdefault(wname, {})[layer.name] = t * layer.units / u
            how = f"its {u}-unit shard scaled to {layer.units} units"
        elif dense is not None:
            layer_time.setdefault(wname, {})[layer.name] = dense[0] + dense[1] * layer.param_bytes
            how = "the dense line through this device's measured dense pieces"
        else:
            raise ProfileError(f"device {name}: {wname} layer {layer.name!r} cannot be built ({r['skipped']}) and no "
                               f"shard of it could be timed either; give the worker more memory")
        sources[f"layer_time_s.{wname}.{layer.name}"] = f"not built whole ({r['skipped']}); time from {how}"
    call_s, layer_time, shard_time = split_call_cost(layer_time, shard_time)
    cell_time: dict[str, dict[tuple[int, int], float]] = {}
    for (wname, a, b), r in sorted((cell_pieces or {}).items()):
        if "skipped" in r:
            skipped[f"{wname}/cell {a}..{b}"] = r["skipped"]
        else:
            cell_time.setdefault(wname, {})[(a, b)] = r["mean_s"]
    for wname, ct in cell_time.items():
        layer_time[wname] = scale_to_cells(workloads.get(wname), layer_time[wname], ct, call_s)
    if dense is not None:
        dense = (max(dense[0] - call_s, 0.0), dense[1])
    measured = {
        "call_s": call_s,
        "host": facts["host"], "address": facts["address"], "cores": facts["cores"], "nthreads": facts["nthreads"],
        "intra_op_threads": facts["intra_op_threads"], "ram_bytes": facts["ram_bytes"],
        "memory_limit_bytes": facts["memory_limit_bytes"], "pause_fraction": facts["pause_fraction"],
        "cgroup_memory_limit_bytes": facts["cgroup_memory_limit_bytes"],
        "baseline_rss_bytes": facts["rss_bytes"], "resident_slice_param_bytes": facts["resident_slice_param_bytes"],
        "noop_round_trip_s": overhead["noop_round_trip_s"], "task_cpu_s": overhead["task_cpu_s"],
        "tensorflow": facts["tensorflow"], **settings,
    }
    if skipped:
        measured["skipped"] = skipped
    if peaks:
        measured["peak_build_bytes"] = peaks
    sources.update({
        "layer_time_s": f"sustained mean of back-to-back calls of a one-layer slice from the worker's task thread, "
                        f"after {settings['warmup']} warm-up calls: at least {settings['repeats']} calls and "
                        f"{settings['span_s']:g} s (at most {settings['budget_s']:g} s once two calls are done); "
                        f"workers on one host timed one at a time (the host's CPU sharing is the profile's "
                        f"host_cores term)",
        "shard_time_s": "same, for every shard size the planner may use on this cluster",
        "cells": "each run of layers the planner never cuts inside, timed as one slice; its layers' times are "
                 "scaled to sum to it less one call (scale_to_cells)",
        "layer_memory_bytes": "RSS growth of the worker from building to after timing the slice, at least its "
                              "parameter bytes",
        "baseline_bytes": "worker RSS after importing TensorFlow, setting its threads and one tiny tf.function "
                          "call, minus the parameters of slices already resident",
        "memory_bytes": "min(memory_limit x Dask's pause fraction, cgroup memory limit, RAM)",
        "task_overhead_s": "CPU seconds of this worker process per task of a probe stream with the runtime's "
                           "traffic (frames embedded, 16 kB exports, merged feeds; see measure_task_overhead), "
                           "plus the fixed cost of calling a piece, taken out of each layer time (measured.call_s, "
                           "split_call_cost)",
    })
    return DeviceKind(
        kind=name, memory_bytes=int(facts["usable_memory_bytes"]), baseline_bytes=int(facts["baseline_bytes"]),
        layer_time_s=layer_time, shard_time_s=shard_time, layer_memory_bytes=memory,
        dense_fixed_s=None if dense is None else dense[0], dense_s_per_weight_byte=None if dense is None else dense[1],
        resources={k: float(v) for k, v in facts["resources"].items()}, sources=sources,
        note=f"measured by mcdask profile on worker {name} ({facts['host']}, {facts['cores']:g} cores, "
             f"{facts['intra_op_threads']} TensorFlow threads)",
        task_overhead_s=max(float(overhead["task_cpu_s"]), 0.0) + call_s, measured=measured)


def profile_cluster(client, workload_names: Iterable[str], *, repeats: int = DEFAULT_REPEATS, warmup: int = 2,
                    span_s: float = DEFAULT_SPAN_S, budget_s: float = DEFAULT_BUDGET_S,
                    link_sizes: Iterable[int] = LINK_SIZES, link_repeats: int = 3,
                    progress: Progress | None = None) -> Profile:
    """Measure every worker of ``client``'s cluster for ``workload_names`` (module docstring)."""
    from mcdask import __version__

    names = [workloads.get(w).name for w in workload_names]
    if not names:
        raise ProfileError("give at least one workload to profile")
    if repeats < 1 or warmup < 0 or span_s < 0 or budget_s <= 0:
        raise ProfileError(f"need repeats >= 1, warmup >= 0, span_s >= 0, budget_s > 0; got {repeats}, {warmup}, "
                           f"{span_s}, {budget_s}")
    timing = {"min_calls": repeats, "min_s": span_s, "max_s": budget_s, "warmup": warmup}
    workers = workers_by_name(client)
    if not workers:
        raise ProfileError("the cluster has no workers; start `dask worker ADDRESS` on each device")
    if CLIENT in workers:
        raise ProfileError(f"a worker is named {CLIENT!r}, which profiles reserve for the frame source; rename it")
    addr = {n: w["address"] for n, w in workers.items()}
    name_of = {a: n for n, a in addr.items()}
    say = progress or (lambda _msg: None)
    t_start = time.perf_counter()

    say(f"worker facts ({len(workers)} workers)")
    try:
        facts = {name_of[a]: f for a, f in client.run(worker_facts, workers=list(addr.values())).items()}
    except ImportError:  # a device installed for litert only (mcdask.runtime.slices.ensure_tf)
        raise ProfileError("mcdask profile times TensorFlow's pieces on the devices, and a device has no "
                           "TensorFlow: install mcdask[device] on the devices while they are profiled, or plan on a "
                           "built-in kind (--profile pi3); timing LiteRT's pieces is not built yet") from None
    # workers on one host are timed one at a time (solo times; the cost model shares the host's
    # cores through host_cores); workers on different hosts at the same time
    by_host: dict[str, list[str]] = {}
    for n in workers:
        by_host.setdefault(facts[n]["host"], []).append(n)
    rounds = [[by_host[h][r] for h in sorted(by_host) if r < len(by_host[h])]
              for r in range(max(len(v) for v in by_host.values()))]
    pieces: dict[str, dict] = {n: {} for n in workers}
    cell_pieces: dict[str, dict] = {n: {} for n in workers}
    for wname in names:
        w = workloads.get(wname)
        for i, layer in enumerate(w.layers):
            for units in [None] + planner_shard_sizes(layer, len(workers)):
                say(f"{wname} {layer.name}" + ("" if units is None else f" [{units} of {layer.units} units]"))
                for group in rounds:   # each worker checks its own memory before building
                    results = client.run(time_piece, wname, i, units, timing,
                                         workers=[addr[n] for n in group])
                    for a, r in results.items():
                        pieces[name_of[a]][(wname, i, units)] = r
        for start, end in cells(w):
            say(f"{wname} layers {w.layers[start].name}..{w.layers[end - 1].name} as one slice")
            for group in rounds:
                results = client.run(time_piece, wname, start, None, timing, end=end,
                                     workers=[addr[n] for n in group])
                for a, r in results.items():
                    cell_pieces[name_of[a]][(wname, start, end)] = r
    say("per-task overhead")
    overhead = measure_task_overhead(client, workers)
    say("links")
    pairs, from_client = measure_links(client, workers, link_sizes, link_repeats, progress)
    settings = {"repeats": repeats, "warmup": warmup, "span_s": span_s, "budget_s": budget_s}
    kinds = {}
    for n in workers:
        s = dict(settings, co_located_workers=len(by_host[facts[n]["host"]]))
        kinds[n] = kind_for(n, facts[n], pieces[n], {"task_cpu_s": overhead["workers"][n],
                                                      "noop_round_trip_s": overhead["noop_round_trip_s"][n]}, s,
                            cell_pieces[n])
    links = []
    pooled: list[tuple[int, float]] = []
    samples: dict[str, list] = {}
    for (a, b), by_size in sorted(pairs.items()):
        pts = [(nb, t) for nb, ts in by_size.items() for t in ts]
        pooled += pts
        links.append(Link(a, b, fit_link(pts)))
        samples[f"{a}<->{b}"] = medians(by_size)
    for n, by_size in from_client.items():
        links.append(Link(CLIENT, n, fit_link([(nb, t) for nb, ts in by_size.items() for t in ts])))
        samples[f"{CLIENT}->{n}"] = medians(by_size)
    if pooled:
        default = fit_link(pooled)
        default_from = "least-squares fit of every worker-pair transfer"
    else:  # one worker: only the client link exists
        default = fit_link([(nb, t) for by_size in from_client.values() for nb, ts in by_size.items() for t in ts])
        default_from = "least-squares fit of the client's transfers (one worker: no worker pairs)"
    measured = {
        "by": f"mcdask {__version__} profile", "workloads": names,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration_s": round(time.perf_counter() - t_start, 1),
        "default_link_from": default_from,
        "link_method": "worker pairs: transfer start/stop of a consumer task in the task stream; client: "
                       "client.scatter(direct=True) wall time",
        "link_samples": {"unit": "[bytes, median seconds]", **samples},
        "task_overhead_probe": overhead["probe"],
        "host_cores_from": "CPUs the workers of the host may run on (affinity)",
        "host_task_overhead_s_from": "CPU seconds of the client process (and the scheduler's, when it is another "
                                     "process) per task and per frame of the overhead probe, on their host "
                                     "(see measure_task_overhead)",
    }
    host_cores = {h: max(float(facts[n]["host_cpus"]) for n in devs) for h, devs in sorted(by_host.items())}
    return Profile(kinds, tuple(Device(n, n, facts[n]["host"]) for n in workers), default, tuple(links),
                   name=f"measured: {len(workers)} workers", note="one kind per device: kind name = worker name",
                   measured=measured, host_cores=host_cores,
                   host_task_overhead_s={h: round(t, 6) for h, t in sorted(overhead["hosts"].items())},
                   host_frame_overhead_s={h: round(t, 6) for h, t in sorted(overhead["hosts_per_frame"].items())})
