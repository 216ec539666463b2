"""The worker side of profiling: functions that run inside worker processes (``client.run``):
the process's memory and cores, TensorFlow set-up, and building and timing one piece."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import socket
from pathlib import Path
from typing import Any

import dask.config
import numpy as np

import workloads
from mcdask.runtime.slices import ensure_tf

#: a piece is built only if RSS now + this x its parameter bytes fits the usable memory
#: (measured here, ``python -m bench.backends``: building a tensorflow slice peaks at 1.04-1.14x
#: its weights, loading a LiteRT one with XNNPACK at 2.03-2.11x; this leaves a margin over both)
BUILD_PEAK_FACTOR = 2.5


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def reset_peak(pid: int | str = "self") -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of process ``pid`` (default: this one);
    False if unsupported."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(pid: int | str = "self") -> int | None:
    """Process ``pid``'s peak resident memory since its last ``reset_peak`` (VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cgroup_memory_limit() -> int | None:
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


def cpu_cores() -> float:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota."""
    cores = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cores


def usable_memory(worker) -> dict[str, Any]:
    """The worker's memory limits and the smallest of them (module docstring)."""
    import psutil

    ram = int(psutil.virtual_memory().total)
    limit = worker.memory_manager.memory_limit
    pause = dask.config.get("distributed.worker.memory.pause", 0.8)
    cgroup = cgroup_memory_limit()
    usable = [ram] + ([int(limit * (pause or 1.0))] if limit else []) + ([cgroup] if cgroup else [])
    return {"ram_bytes": ram, "memory_limit_bytes": int(limit) if limit else None, "pause_fraction": pause or None,
            "cgroup_memory_limit_bytes": cgroup, "usable_memory_bytes": min(usable)}


def runtime_baseline_bytes(runtime: str = "tensorflow") -> int:
    """This process's resident bytes with the device runtime ``runtime`` loaded (tensorflow:
    imported, its threads set, one tiny ``tf.function`` run; litert: the interpreter imported,
    TensorFlow not), less the weights of the slices it holds. Shared-library pages count: Dask
    pauses a worker on its whole resident size, and how many of those pages a process maps
    depends on what the system has cached (TensorFlow here: 572 MiB after dropping the page
    cache, 692 MiB once its files were read, as by the install)."""
    from mcdask.runtime import plugin

    if runtime.startswith("litert"):
        try:
            from ai_edge_litert import interpreter  # noqa: F401
        except ImportError as e:
            raise ImportError(f"this device has no LiteRT for a litert deployment ({e}); install mcdask[litert] "
                              "on it, or deploy with --backend tensorflow") from None
    else:
        ensure_tf()   # first: it says what to do where TensorFlow is missing
        import tensorflow as tf

        tiny = tf.function(lambda x: tf.nn.relu(tf.matmul(x, x)), autograph=False)
        tiny(tf.ones((4, 4)))
    gc.collect()
    return max(rss_bytes() - plugin.resident_param_bytes(), 0)


def collect_facts(worker) -> dict[str, Any]:
    threads = ensure_tf()   # first: it says what to do where TensorFlow is missing
    import tensorflow as tf

    from mcdask.runtime import plugin

    baseline = runtime_baseline_bytes("tensorflow")
    rss = rss_bytes()
    resident = plugin.resident_param_bytes()
    return {**usable_memory(worker),
        "name": str(worker.name), "address": worker.address, "host": socket.gethostname(),
        "pid": os.getpid(), "cores": cpu_cores(), "host_cpus": len(os.sched_getaffinity(0)),
        "nthreads": worker.state.nthreads,
        "intra_op_threads": threads, "rss_bytes": rss, "resident_slice_param_bytes": resident,
        "baseline_bytes": baseline,
        "resources": dict(worker.state.total_resources),
        "tensorflow": tf.__version__,
    }


async def worker_facts(dask_worker) -> dict[str, Any]:
    """``client.run`` target: memory, cores, threads, resources and the runtime baseline."""
    return await asyncio.to_thread(collect_facts, dask_worker)


def piece_feeds(s, workload) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for x in s.inputs:
        shape = (1,) + s.input_shape(x)
        out[x] = (rng.integers(0, 256, shape, dtype=np.uint8) if x in workload.inputs
                  else rng.random(shape, dtype=np.float32))
    return out


def call_piece(s, w, feeds):
    from mcdask.runtime.slices import assemble

    return s(assemble(w, feeds, s.stacked))


def build_and_time(workload_name: str, index: int, units: int | None, timing: dict[str, Any],
                   usable_bytes: int, end: int | None = None) -> dict[str, Any]:
    """Build, time and free one piece (layer ``index``, or its first ``units`` units, or with
    ``end`` layers ``index`` to ``end``); skip it (saying why) if building it would not fit.
    ``timing`` holds ``sustained_mean``'s keywords (``min_calls``, ``min_s``, ``max_s``,
    ``warmup``): the piece is timed as the runtime calls it, back to back."""
    from mcdask.runtime.pieces import SliceShape
    from mcdask.runtime.slices import Slice, SliceSpec
    from mcdask.runtime.timing import sustained_mean

    ensure_tf()
    w = workloads.get(workload_name)
    spec = SliceSpec(workload_name, index, index + 1 if end is None else end, None if units is None else (0, units))
    param = SliceShape(spec).param_bytes
    gc.collect()
    before = rss_bytes()
    need = before + BUILD_PEAK_FACTOR * param
    if need > usable_bytes:
        return {"skipped": f"needs about {need / 1e6:,.0f} MB to build (RSS {before / 1e6:,.0f} MB + "
                           f"{BUILD_PEAK_FACTOR:g} x {param / 1e6:,.0f} MB of weights); usable memory "
                           f"{usable_bytes / 1e6:,.0f} MB"}
    peak_ok = reset_peak()
    s = Slice(spec)
    feeds = piece_feeds(s, w)
    timed = sustained_mean(functools.partial(call_piece, s, w, feeds), **timing)
    after = rss_bytes()
    peak = peak_rss_bytes() if peak_ok else None
    del s, feeds
    gc.collect()
    return {**timed, "memory_bytes": max(after - before, 0), "param_bytes": param,
            "peak_build_bytes": None if peak is None else max(peak - before, 0)}


async def time_piece(workload_name: str, index: int, units: int | None, timing: dict[str, Any], *,
                     dask_worker, end: int | None = None) -> dict[str, Any]:
    """``client.run`` target: time layer ``index`` (or its first ``units`` units, or layers
    ``index`` to ``end``) here, on the worker's task thread, where slices run (on a farm device
    that thread is under the device's compute quota, and Dask's own threads are not)."""
    usable = usable_memory(dask_worker)["usable_memory_bytes"]
    run = functools.partial(build_and_time, workload_name, index, units, timing, usable, end)
    return await asyncio.get_running_loop().run_in_executor(dask_worker.executors["default"], run)


def noop() -> None:
    return None


def payload(nbytes: int, seed: int) -> np.ndarray:
    """``nbytes`` of incompressible data (compression, where Dask applies it, cannot help)."""
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


def consume(x: np.ndarray) -> int:
    return int(x.nbytes)
