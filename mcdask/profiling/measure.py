"""Measure a running Dask cluster into a profile (schema ``mcdask.profile/1``), cache it, plan on it.

``profile_cluster(client, ["alexnet"])`` returns a :class:`mcdask.model.profile.Profile` with one
device kind per worker (kind name = device name = worker name):

* **Compute**, in each worker process (``client.run`` of a module-level function, off the
  worker's event loop; TensorFlow threads from ``mcdask.worker.intra-op-threads`` as the
  slice plugin sets them): for every layer of each workload, a one-layer slice
  ``Slice(SliceSpec(workload, i, i + 1, units))`` is built, called ``warmup`` times, then timed
  (median of up to ``repeats`` calls, fewer once ``budget_s`` is spent) and freed. Dense layers
  are also timed as every shard size the planner may use with the cluster's worker count
  (``shard_units(U, k)`` for ``k = 2..n``: both ``floor(U/k)`` and ``ceil(U/k)``), stored as
  ``shard_time_s[workload][layer][units]``. Layers that read a workload input get it as uint8,
  as the runtime sends frames. One ``client.run`` per piece and round: workers on different
  hosts time it at the same time, workers sharing a host one after the other (solo times;
  see *Shared hosts*).
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

import asyncio
import functools
import gc
import hashlib
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import dask.config
import numpy as np

import workloads

from mcdask.planning.costmodel import shard_units
from mcdask.errors import ProfileError
from mcdask.model.profile import CLIENT, Device, DeviceKind, Link, LinkModel, Profile

#: a piece is built only if RSS now + this x its parameter bytes fits the usable memory
#: (measured here: building AlexNet fc1 peaked at 4.1x its 75 MB of weights; the seeded kernel in
#: NumPy, Keras's zero-initialised variable, the converted and the assigned copies)
BUILD_PEAK_FACTOR = 4.0
#: payload sizes of the link measurements, bytes (1 kB .. 4 MB)
LINK_SIZES = (1_000, 16_000, 256_000, 1_000_000, 4_000_000)
DEFAULT_REPEATS = 7
DEFAULT_BUDGET_S = 2.0
#: probe chains per worker for the per-task overhead
OVERHEAD_FRAMES = 80

Progress = Callable[[str], None]


# ================================================================================================
# worker side: these run inside the worker processes (client.run)
# ================================================================================================

def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_memory_limit() -> int | None:
    """This process's cgroup memory limit in bytes (v2 or v1), None if unlimited or unknown."""
    candidates = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max")
            elif "memory" in controllers.split(","):
                candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes")
    except (OSError, ValueError):
        pass
    candidates += [Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
    for p in candidates:
        try:
            raw = p.read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        value = int(raw)
        return value if value < 2**60 else None   # v1 reports "unlimited" as a huge number
    return None


def _cpu_cores() -> float:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota."""
    cores = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cores


def _usable_memory(worker) -> dict[str, Any]:
    """The worker's memory limits and the smallest of them (module docstring)."""
    import psutil

    ram = int(psutil.virtual_memory().total)
    limit = worker.memory_manager.memory_limit
    pause = dask.config.get("distributed.worker.memory.pause", 0.8)
    cgroup = _cgroup_memory_limit()
    usable = [ram] + ([int(limit * (pause or 1.0))] if limit else []) + ([cgroup] if cgroup else [])
    return {"ram_bytes": ram, "memory_limit_bytes": int(limit) if limit else None, "pause_fraction": pause or None,
            "cgroup_memory_limit_bytes": cgroup, "usable_memory_bytes": min(usable)}


def _ensure_tf() -> int:
    """Import TensorFlow and set its threads exactly as the slice plugin does (once per
    process); returns the intra-op threads in effect."""
    from mcdask.runtime.deploy import plugin
    from mcdask.runtime.slices import set_threads

    if not plugin._TF_READY:
        threads = dask.config.get("mcdask.worker.intra-op-threads", None) or len(os.sched_getaffinity(0))
        set_threads(threads)
        plugin._TF_READY = True
    import tensorflow as tf

    return int(tf.config.threading.get_intra_op_parallelism_threads()) or len(os.sched_getaffinity(0))


def _worker_facts(worker) -> dict[str, Any]:
    import tensorflow as tf

    from mcdask.runtime.deploy import plugin

    threads = _ensure_tf()
    tiny = tf.function(lambda x: tf.nn.relu(tf.matmul(x, x)), autograph=False)
    tiny(tf.ones((4, 4)))
    gc.collect()
    rss = _rss_bytes()
    resident = sum(getattr(s, "param_bytes", 0) for s in plugin._BUILT.values())
    return {**_usable_memory(worker),
        "name": str(worker.name), "address": worker.address, "host": socket.gethostname(),
        "pid": os.getpid(), "cores": _cpu_cores(), "host_cpus": len(os.sched_getaffinity(0)), "nthreads": worker.state.nthreads,
        "intra_op_threads": threads, "rss_bytes": rss, "resident_slice_param_bytes": resident,
        "baseline_bytes": max(rss - resident, 0),
        "resources": dict(worker.state.total_resources),
        "tensorflow": tf.__version__,
    }


async def worker_facts(dask_worker) -> dict[str, Any]:
    """``client.run`` target: memory, cores, threads, resources and the runtime baseline."""
    return await asyncio.to_thread(_worker_facts, dask_worker)


def _feeds(s, workload) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for x in s.inputs:
        shape = (1,) + s.input_shape(x)
        out[x] = (rng.integers(0, 256, shape, dtype=np.uint8) if x in workload.inputs
                  else rng.random(shape, dtype=np.float32))
    return out


def _call(s, w, feeds):
    from mcdask.runtime.slices import assemble

    return s(assemble(w, feeds, s.stacked))


def _time_piece(workload_name: str, index: int, units: int | None, repeats: int, warmup: int,
                budget_s: float, usable_bytes: int) -> dict[str, Any]:
    """Build, time and free one piece; skip it (saying why) if building it would not fit."""
    from mcdask.runtime.slices import Slice, SliceSpec
    from mcdask.runtime.timing import time_call

    _ensure_tf()
    w = workloads.get(workload_name)
    layer = w.layers[index]
    param = layer.param_bytes if units is None else layer.shard_param_bytes(units)
    gc.collect()
    before = _rss_bytes()
    need = before + BUILD_PEAK_FACTOR * param
    if need > usable_bytes:
        return {"skipped": f"needs about {need / 1e6:,.0f} MB to build (RSS {before / 1e6:,.0f} MB + "
                           f"{BUILD_PEAK_FACTOR:g} x {param / 1e6:,.0f} MB of weights); usable memory "
                           f"{usable_bytes / 1e6:,.0f} MB"}
    peak_ok = _reset_peak()
    s = Slice(SliceSpec(workload_name, index, index + 1, None if units is None else (0, units)))
    feeds = _feeds(s, w)
    times = time_call(functools.partial(_call, s, w, feeds), repeats, warmup, budget_s)
    after = _rss_bytes()
    peak = _peak_rss_bytes() if peak_ok else None
    del s, feeds
    gc.collect()
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times),
            "memory_bytes": max(after - before, 0), "param_bytes": param,
            "peak_build_bytes": None if peak is None else max(peak - before, 0)}


async def time_piece(workload_name: str, index: int, units: int | None, repeats: int, warmup: int,
                     budget_s: float, *, dask_worker) -> dict[str, Any]:
    """``client.run`` target: time layer ``index`` (or its first ``units`` units) here, on the
    worker's task thread, where slices run (on a farm device that thread is under the device's
    compute quota, and Dask's own threads are not)."""
    run = functools.partial(_time_piece, workload_name, index, units, repeats, warmup, budget_s,
                            _usable_memory(dask_worker)["usable_memory_bytes"])
    return await asyncio.get_running_loop().run_in_executor(dask_worker.executors["default"], run)


def noop() -> None:
    return None


def payload(nbytes: int, seed: int) -> np.ndarray:
    """``nbytes`` of incompressible data (compression, where Dask applies it, cannot help)."""
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


def consume(x: np.ndarray) -> int:
    return int(x.nbytes)


# ================================================================================================
# client side
# ================================================================================================

def _workers(client) -> dict[str, dict]:
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


def fit_link(points: Iterable[tuple[float, float]]) -> LinkModel:
    """Least-squares ``t = latency_s + bytes / bandwidth_Bps`` through (bytes, seconds) points,
    latency clamped at 0 (then the line through the origin)."""
    pts = [(float(n), float(t)) for n, t in points]
    if len({n for n, _ in pts}) < 2:
        raise ProfileError(f"fitting a link needs points of at least two payload sizes; got {pts}")
    mx = sum(n for n, _ in pts) / len(pts)
    my = sum(t for _, t in pts) / len(pts)
    slope = sum((n - mx) * (t - my) for n, t in pts) / sum((n - mx) ** 2 for n, _ in pts)
    latency = my - slope * mx
    if latency < 0:
        latency, slope = 0.0, sum(n * t for n, t in pts) / sum(n * n for n, _ in pts)
    if slope <= 0:  # time does not grow with size (noise): the slowest rate seen, bounded
        slope = max(t / n for n, t in pts if n > 0)
    return LinkModel(latency_s=latency, bandwidth_Bps=1 / slope)


def _medians(samples: dict[int, list[float]]) -> list[list[float]]:
    return [[n, statistics.median(ts)] for n, ts in sorted(samples.items())]


def _cpu_seconds() -> tuple[str, int, float]:
    """(host, pid, user + system CPU seconds) of this process."""
    import psutil

    t = psutil.Process().cpu_times()
    return socket.gethostname(), os.getpid(), t.user + t.system


def probe_piece(feeds: dict, exports: dict[str, tuple]) -> dict[str, np.ndarray]:
    """A piece that computes nothing: touches its feeds as ``run_piece`` does (merging the
    producers' shards) and returns zero exports of the real shapes."""
    for value in feeds.values():
        if not isinstance(value, np.ndarray):
            [np.concatenate([part[k] for part in shards for k in part], axis=-1) for shards in value]
    return {name: np.zeros((1,) + tuple(shape), np.float32) for name, shape in exports.items()}


class _ProbeRunner:
    """Submits ``probe_piece`` tasks for a ``Stream``: stage s of frame i on worker ``(i + s) % n``."""

    def __init__(self, client, plan, workload, addrs: list[str]):
        self.client, self.addrs = client, addrs
        self.exports = [{x: workload.shape_of(x) for x in workload.stage_outputs(st.start, st.end)}
                        for st in plan.stages]
        self.tasks = {a: 0 for a in addrs}

    def submit(self, stage: int, shard: int, frame: int, feeds: dict):
        a = self.addrs[(frame + stage) % len(self.addrs)]
        self.tasks[a] += 1
        return self.client.submit(probe_piece, feeds, self.exports[stage], workers=[a], pure=False,
                                  priority=-frame, key=(f"mcdask-probe-s{stage}", frame, time.monotonic_ns()))

    def gather(self, futures: list) -> list:
        return self.client.gather(futures)


def _probe_stream(client, addrs: list[str], stages: int, frames: int) -> dict[str, Any]:
    """Stream ``frames`` AlexNet-sized frames through a ``stages``-stage plan of no-op pieces;
    CPU seconds spent by each worker, the client process and the scheduler process."""
    from mcdask.model.plan import Plan, Shard, Stage
    from mcdask.streaming.stream import Item, Stream

    w = workloads.get("alexnet")
    cuts = [0, 9, len(w.layers)] if stages == 2 else [0, len(w.layers)]
    plan = Plan(w.name, ("probe",), tuple(Stage(a, b, (Shard(None, ("probe",)),)) for a, b in zip(cuts, cuts[1:])),
                "probe")
    runner = _ProbeRunner(client, plan, w, addrs)
    rng = np.random.default_rng(0)
    items = [Item(i, {x: rng.integers(0, 256, shape, dtype=np.uint8) for x, shape in w.inputs.items()})
             for i in range(frames)]
    sched0 = client.run_on_scheduler(_cpu_seconds)
    me0 = _cpu_seconds()
    w0 = client.run(_cpu_seconds, workers=addrs)
    t0 = time.perf_counter()
    for rec in Stream(runner, plan, w, 2 * len(addrs)).run(items):
        if rec.status != "ok":
            raise ProfileError(f"overhead probe: frame {rec.frame} failed: {rec.error}")
    wall = time.perf_counter() - t0
    w1 = client.run(_cpu_seconds, workers=addrs)
    me1 = _cpu_seconds()
    sched1 = client.run_on_scheduler(_cpu_seconds)
    hosts = {me0[0]: me1[2] - me0[2]}
    if (sched0[0], sched0[1]) != (me0[0], me0[1]):      # a scheduler process of its own
        hosts[sched0[0]] = hosts.get(sched0[0], 0.0) + sched1[2] - sched0[2]
    return {"workers": {a: (w1[a][2] - w0[a][2], runner.tasks[a]) for a in addrs}, "hosts": hosts,
            "wall_s": wall, "scheduler_in_client_process": (sched0[0], sched0[1]) == (me0[0], me0[1])}


def measure_task_overhead(client, workers: dict[str, dict], frames: int = OVERHEAD_FRAMES) -> dict[str, Any]:
    """CPU cost of Dask's machinery per task and per frame, measured with the stream itself.

    ``mcdask.streaming.stream.Stream`` sends AlexNet-sized uint8 frames through a 1-stage and a 2-stage
    plan whose pieces compute nothing (``probe_piece``: they merge their feeds and return
    zero exports of the real shapes), stage s of frame i on worker ``(i + s) % n``. Per worker:
    its process's CPU seconds per task. Per host of the client (and of the scheduler, when it
    is a process of its own): from ``c1 = frame + task`` and ``c2 = frame + 2 task`` CPU
    seconds per frame of the two runs, ``task`` and ``frame`` (each at least 0). Also the
    isolated round trip of one no-op task per worker, for people.
    """
    names = list(workers)
    addrs = [workers[n]["address"] for n in names]
    rtt = {}
    for name, a in zip(names, addrs):
        client.submit(noop, workers=[a], pure=False).result()          # warm the path
        times = []
        for _ in range(5):
            time.sleep(0.02)  # isolated: the client's batching window is idle again
            t0 = time.perf_counter()
            client.submit(noop, workers=[a], pure=False).result()
            times.append(time.perf_counter() - t0)
        rtt[name] = statistics.median(times)
    _probe_stream(client, addrs, 1, 8)   # warm up
    one = _probe_stream(client, addrs, 1, frames)
    two = _probe_stream(client, addrs, 2, frames)
    per_worker = {}
    for n, a in zip(names, addrs):
        cpu = one["workers"][a][0] + two["workers"][a][0]
        tasks = one["workers"][a][1] + two["workers"][a][1]
        per_worker[n] = cpu / tasks if tasks else 0.0
    hosts, host_frame = {}, {}
    for h in sorted(set(one["hosts"]) | set(two["hosts"])):
        c1, c2 = one["hosts"].get(h, 0.0) / frames, two["hosts"].get(h, 0.0) / frames
        task = max(c2 - c1, 0.0)
        hosts[h], host_frame[h] = task, max(c1 - task, 0.0)
    return {"workers": per_worker, "hosts": hosts, "hosts_per_frame": host_frame, "noop_round_trip_s": rtt,
            "probe": {"frames": frames, "wall_s": [round(one["wall_s"], 3), round(two["wall_s"], 3)],
                      "client_host_cpu_s_per_frame": {h: [round(one["hosts"].get(h, 0.0) / frames, 6),
                                                          round(two["hosts"].get(h, 0.0) / frames, 6)]
                                                      for h in hosts},
                      "scheduler_in_client_process": one["scheduler_in_client_process"]}}


def measure_links(client, workers: dict[str, dict], sizes: Iterable[int] = LINK_SIZES, repeats: int = 3,
                  progress: Progress | None = None) -> tuple[dict[tuple[str, str], dict[int, list[float]]],
                                                             dict[str, dict[int, list[float]]]]:
    """Transfer samples: ``{(a, b): {bytes: [s, ...]}}`` for unordered worker pairs (both
    directions pooled, ``a < b`` by name order) and ``{worker: {bytes: [s, ...]}}`` from the client."""
    from distributed import get_task_stream, wait

    sizes = sorted(set(int(n) for n in sizes))
    names = list(workers)
    pairs: dict[tuple[str, str], dict[int, list[float]]] = {}
    if len(names) > 1:
        consumers: dict[str, tuple[tuple[str, str], int]] = {}
        with get_task_stream(client) as stream:
            run = 0
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    if progress:
                        progress(f"link {a} <-> {b}")
                    for src, dst in ((a, b), (b, a)):
                        # the first transfer of each direction opens the connection: not kept
                        for j, n in enumerate([sizes[0]] + [n for n in sizes for _ in range(repeats)]):
                            run += 1
                            p = client.submit(payload, n, run, workers=[workers[src]["address"]], pure=False,
                                              key=f"mcdask-profile-payload-{run}")
                            wait(p)
                            c = client.submit(consume, p, workers=[workers[dst]["address"]], pure=False,
                                              key=f"mcdask-profile-consume-{run}")
                            got = c.result()
                            if got != n:
                                raise ProfileError(f"link {src}->{dst}: sent {n} bytes, {got} arrived")
                            if j:
                                consumers[c.key] = ((a, b), n)
                            del p, c
            time.sleep(0.1)   # the task stream's last records arrive on the scheduler's batch cycle
        by_key = {r["key"]: r for r in stream.data}   # filled when the context closes
        for key, (pair, n) in consumers.items():
            rec = by_key.get(key)
            if rec is None:
                raise ProfileError(f"the task stream lost the record of {key}; rerun the profile")
            spans = [s["stop"] - s["start"] for s in rec["startstops"] if s["action"] == "transfer"]
            if not spans:
                raise ProfileError(f"{key} on {rec.get('worker')} shows no transfer: was it placed on the "
                                   f"producer's worker? (startstops {rec['startstops']})")
            pairs.setdefault(pair, {}).setdefault(n, []).append(sum(spans))
    from_client: dict[str, dict[int, list[float]]] = {}
    for name in names:
        if progress:
            progress(f"link client -> {name}")
        addr = [workers[name]["address"]]
        samples: dict[int, list[float]] = {}
        for j, n in enumerate([sizes[0]] + [n for n in sizes for _ in range(repeats)]):
            x = payload(n, j)
            t0 = time.perf_counter()
            f = client.scatter(x, workers=addr, direct=True, hash=False)
            dt = time.perf_counter() - t0
            del f
            if j:
                samples.setdefault(n, []).append(dt)
        from_client[name] = samples
    return pairs, from_client


def _dense_model(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """(fixed_s, s_per_weight_byte) through (param bytes, seconds) of measured dense pieces, or
    None when the line is not meaningful (fewer than two sizes, a negative slope or intercept)."""
    if len({b for b, _ in points}) < 2:
        return None
    mx = sum(b for b, _ in points) / len(points)
    my = sum(t for _, t in points) / len(points)
    slope = sum((b - mx) * (t - my) for b, t in points) / sum((b - mx) ** 2 for b, _ in points)
    fixed = my - slope * mx
    return (fixed, slope) if slope > 0 and fixed >= 0 else None


def _kind_for(name: str, facts: dict, pieces: dict, overhead: dict, settings: dict) -> DeviceKind:
    """One device's DeviceKind from its facts and ``pieces[(workload, layer index, units)]``."""
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
            dense_points.append((r["param_bytes"], r["median_s"]))
        if units is None:
            layer_time.setdefault(wname, {})[layer.name] = r["median_s"]
            memory.setdefault(wname, {})[layer.name] = max(r["memory_bytes"], r["param_bytes"])
        else:
            shard_time.setdefault(wname, {}).setdefault(layer.name, {})[units] = r["median_s"]
    dense = _dense_model(dense_points)
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
    measured = {
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
        "layer_time_s": f"median of up to {settings['repeats']} calls of a one-layer slice after {settings['warmup']} "
                        f"warm-up calls (at most {settings['budget_s']} s each); workers on one host timed one at a "
                        f"time (the host's CPU sharing is the profile's host_cores term)",
        "shard_time_s": "same, for every shard size the planner may use on this cluster",
        "layer_memory_bytes": "RSS growth of the worker from building to after timing the slice, at least its "
                              "parameter bytes",
        "baseline_bytes": "worker RSS after importing TensorFlow, setting its threads and one tiny tf.function "
                          "call, minus the parameters of slices already resident",
        "memory_bytes": "min(memory_limit x Dask's pause fraction, cgroup memory limit, RAM)",
        "task_overhead_s": "CPU seconds of this worker process per task of a probe stream with the runtime's "
                           "traffic (frames embedded, 16 kB exports, merged feeds; see measure_task_overhead)",
    })
    return DeviceKind(
        kind=name, memory_bytes=int(facts["usable_memory_bytes"]), baseline_bytes=int(facts["baseline_bytes"]),
        layer_time_s=layer_time, shard_time_s=shard_time, layer_memory_bytes=memory,
        dense_fixed_s=None if dense is None else dense[0], dense_s_per_weight_byte=None if dense is None else dense[1],
        resources={k: float(v) for k, v in facts["resources"].items()}, sources=sources,
        note=f"measured by mcdask profile on worker {name} ({facts['host']}, {facts['cores']:g} cores, "
             f"{facts['intra_op_threads']} TensorFlow threads)",
        task_overhead_s=max(float(overhead["task_cpu_s"]), 0.0), measured=measured)


def profile_cluster(client, workload_names: Iterable[str], *, repeats: int = DEFAULT_REPEATS, warmup: int = 2,
                    budget_s: float = DEFAULT_BUDGET_S, link_sizes: Iterable[int] = LINK_SIZES,
                    link_repeats: int = 3, progress: Progress | None = None) -> Profile:
    """Measure every worker of ``client``'s cluster for ``workload_names`` (module docstring)."""
    from mcdask import __version__

    names = [workloads.get(w).name for w in workload_names]
    if not names:
        raise ProfileError("give at least one workload to profile")
    if repeats < 1 or warmup < 0 or budget_s <= 0:
        raise ProfileError(f"need repeats >= 1, warmup >= 0, budget_s > 0; got {repeats}, {warmup}, {budget_s}")
    workers = _workers(client)
    if not workers:
        raise ProfileError("the cluster has no workers; start `dask worker ADDRESS` on each device")
    if CLIENT in workers:
        raise ProfileError(f"a worker is named {CLIENT!r}, which profiles reserve for the frame source; rename it")
    addr = {n: w["address"] for n, w in workers.items()}
    name_of = {a: n for n, a in addr.items()}
    say = progress or (lambda _msg: None)
    t_start = time.perf_counter()

    say(f"worker facts ({len(workers)} workers)")
    facts = {name_of[a]: f for a, f in client.run(worker_facts, workers=list(addr.values())).items()}
    # workers on one host are timed one at a time (solo times; the cost model shares the host's
    # cores through host_cores); workers on different hosts at the same time
    by_host: dict[str, list[str]] = {}
    for n in workers:
        by_host.setdefault(facts[n]["host"], []).append(n)
    rounds = [[by_host[h][r] for h in sorted(by_host) if r < len(by_host[h])]
              for r in range(max(len(v) for v in by_host.values()))]
    pieces: dict[str, dict] = {n: {} for n in workers}
    for wname in names:
        w = workloads.get(wname)
        for i, layer in enumerate(w.layers):
            for units in [None] + planner_shard_sizes(layer, len(workers)):
                say(f"{wname} {layer.name}" + ("" if units is None else f" [{units} of {layer.units} units]"))
                for group in rounds:   # each worker checks its own memory before building
                    results = client.run(time_piece, wname, i, units, repeats, warmup, budget_s,
                                         workers=[addr[n] for n in group])
                    for a, r in results.items():
                        pieces[name_of[a]][(wname, i, units)] = r
    say("per-task overhead")
    overhead = measure_task_overhead(client, workers)
    say("links")
    pairs, from_client = measure_links(client, workers, link_sizes, link_repeats, progress)
    settings = {"repeats": repeats, "warmup": warmup, "budget_s": budget_s}
    kinds = {}
    for n in workers:
        s = dict(settings, co_located_workers=len(by_host[facts[n]["host"]]))
        kinds[n] = _kind_for(n, facts[n], pieces[n], {"task_cpu_s": overhead["workers"][n],
                                                      "noop_round_trip_s": overhead["noop_round_trip_s"][n]}, s)
    links = []
    pooled: list[tuple[int, float]] = []
    samples: dict[str, list] = {}
    for (a, b), by_size in sorted(pairs.items()):
        pts = [(nb, t) for nb, ts in by_size.items() for t in ts]
        pooled += pts
        links.append(Link(a, b, fit_link(pts)))
        samples[f"{a}<->{b}"] = _medians(by_size)
    for n, by_size in from_client.items():
        links.append(Link(CLIENT, n, fit_link([(nb, t) for nb, ts in by_size.items() for t in ts])))
        samples[f"{CLIENT}->{n}"] = _medians(by_size)
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


# ================================================================================================
# the cache and --plan auto
# ================================================================================================

def cache_dir_default() -> Path:
    return Path(os.path.expanduser(dask.config.get("mcdask.profile.cache-dir", None) or "~/.cache/mcdask"))


def cache_key(client) -> str:
    """Key of the cluster's devices: sorted worker names, their memory limits and thread
    counts, the TensorFlow threads the client's config asks for, and the mcdask version."""
    from mcdask import __version__

    devices = [{"name": n, "memory_limit": w.get("memory_limit"), "nthreads": w.get("nthreads")}
               for n, w in sorted(_workers(client).items())]
    doc = {"devices": devices, "intra_op_threads": dask.config.get("mcdask.worker.intra-op-threads", None),
           "mcdask": __version__}
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _merge(base: Profile, extra: Profile) -> Profile:
    """``base`` with the compute of ``extra``'s workloads added (links, memory and overhead: base's)."""
    from dataclasses import replace

    kinds = {}
    for k, v in base.kinds.items():
        e = extra.kinds[k]
        kinds[k] = replace(v, layer_time_s={**v.layer_time_s, **e.layer_time_s},
                           shard_time_s={**v.shard_time_s, **e.shard_time_s},
                           layer_memory_bytes={**v.layer_memory_bytes, **e.layer_memory_bytes},
                           measured={**v.measured, **{f"{x}": y for x, y in e.measured.items()
                                                      if x in ("skipped", "peak_build_bytes")
                                                      and not v.measured.get(x)}})
    measured = dict(base.measured, workloads=sorted(set(base.measured.get("workloads", []))
                                                     | set(extra.measured.get("workloads", []))))
    return Profile(kinds, base.devices, base.default_link, base.links, base.name, base.note, measured)


def cached_profile(client, workload_names: Iterable[str], cache_dir: str | Path | None = None, *,
                   refresh: bool = False, progress: Progress | None = None, **measure) -> Profile:
    """The cluster's profile from the cache, measured (and stored) if absent or ``refresh``;
    workloads missing from a cached profile are measured and merged in."""
    names = [workloads.get(w).name for w in workload_names]
    directory = Path(cache_dir) if cache_dir is not None else cache_dir_default()
    path = directory / f"profile-{cache_key(client)}.json"
    prof = None
    if path.exists() and not refresh:
        try:
            prof = Profile.load(path)
        except ProfileError as e:
            if progress:
                progress(f"ignoring unreadable cached profile {path}: {e}")
    if prof is not None:
        missing = [w for w in names if any(k.covers(workloads.get(w)) for k in prof.kinds.values())]
        if set(prof.device_names) != set(_workers(client)):
            prof = None
        elif missing:
            prof = _merge(prof, profile_cluster(client, missing, progress=progress, **measure))
            prof.save(path)
            return prof
        else:
            return prof
    prof = profile_cluster(client, names, progress=progress, **measure)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    prof.save(tmp)
    tmp.replace(path)
    return prof


def auto_plan(client, workload, cache_dir: str | Path | None = None, *, strategy: str = "optimal",
              progress: Progress | None = None, **measure):
    """The planner's plan for every worker of ``client``'s cluster, on its measured profile
    (cached per set of devices; see ``cached_profile``)."""
    from mcdask.planning.planner import plan
    from mcdask.runtime.deploy import worker_names

    w = workloads.get(workload) if isinstance(workload, str) else workload
    names = worker_names(client)
    if not names:
        raise ProfileError("the cluster has no workers to plan for; start `dask worker ADDRESS` on each device")
    prof = cached_profile(client, [w.name], cache_dir, progress=progress, **measure)
    return plan(w, prof.subset(names), len(names), strategy)
