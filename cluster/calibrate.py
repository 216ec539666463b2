"""Measure whole-AlexNet time: on this host (to size CPU quotas) and inside a farm device.

The host measurement runs ``python -m mcdask.runtime.timing --workload alexnet --json`` in a fresh
process (the runtime's timing tool: median single-thread whole-model inference) and reads
``median_s`` from its last stdout line (no quota here: single calls are what they are), on
TensorFlow and, for a litert farm, on LiteRT. Inside a device the same model is built with the
runtime's slices (TensorFlow's, or LiteRT's from flatbuffers converted on the host) and timed with
``mcdask.runtime.timing.sustained_mean``, the mean of back-to-back calls under the device's
quotas: ``prepare`` builds it (call it before the CPU quota is applied), ``measure`` times it,
``release`` frees it. ``cluster.closed_loop`` corrects each device's quota on ``measure``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from .errors import FarmError
from .system import run_json

_PREPARED: dict[str, Callable[[], None]] = {}


def host_time_s(workload: str = "alexnet", repeats: int = 20, timeout_s: float = 300,
                cgroup: str | None = None, backend: str = "tensorflow", relative_to: str | None = None,
                seconds: float = 10.0) -> dict:
    """Median single-thread whole-model time on ``backend`` in a fresh process on this host (in
    the cgroup directory ``cgroup`` if given); with ``relative_to``, also ``ratio``: its time
    over that backend's, from blocks of calls of each interleaved for ``seconds``
    (``mcdask.runtime.timing.interleaved``)."""
    cmd = [sys.executable, "-m", "mcdask.runtime.timing", "--workload", workload, "--repeats", str(repeats),
           "--backend", backend, "--json",
           *(["--relative-to", relative_to, "--seconds", f"{seconds:g}"] if relative_to else [])]
    t0 = time.perf_counter()
    result = run_json(cmd, timeout_s=timeout_s, cgroup=cgroup)
    try:
        median = float(result["median_s"])
        ratio = {"ratio": float(result["ratio"]), "relative_to": relative_to} if relative_to else {}
    except (KeyError, TypeError, ValueError):
        raise FarmError(f"calibration `{' '.join(cmd)}` printed no median_s"
                        f"{' or ratio' if relative_to else ''}: {result}") from None
    return {"workload": workload, "backend": backend, "host_time_s": median, "min_s": result.get("min_s"),
            "repeats": result.get("repeats"), **ratio, "command": " ".join(["python", *cmd[1:]]),
            "wall_s": round(time.perf_counter() - t0, 2)}


def whole_model(workload: str, backend: str = "tensorflow", flatbuffers: list[str] | None = None) -> Callable[[], None]:
    """A zero-argument function running one frame through the whole workload (one thread), on
    TensorFlow or on LiteRT from ``flatbuffers`` (``mcdask.runtime.timing.litert_flatbuffers``: a litert device has no
    TensorFlow to convert them)."""
    from mcdask.runtime.timing import whole_model as build

    return build(workload, intra_op=1, backend=backend, flatbuffers=flatbuffers)


def prepare(workload: str = "alexnet", warmup: int = 2, backend: str = "tensorflow",
            flatbuffers: list[str] | None = None) -> float:
    """Build and warm the whole model in this process; seconds it took."""
    t0 = time.perf_counter()
    if workload not in _PREPARED:
        _PREPARED[workload] = whole_model(workload, backend, flatbuffers)
    for _ in range(warmup):
        _PREPARED[workload]()
    return time.perf_counter() - t0


def measure(workload: str = "alexnet", min_calls: int = 5, min_s: float = 0.0, warmup: int = 1) -> dict:
    """Sustained seconds per whole-model inference in this process (``mean_s`` of
    ``mcdask.runtime.timing.sustained_mean``); ``prepare`` first, or it builds."""
    from mcdask.runtime.timing import sustained_mean

    if workload not in _PREPARED:
        prepare(workload, warmup=0)
    return sustained_mean(_PREPARED[workload], min_calls=min_calls, min_s=min_s, warmup=warmup)


def release(workload: str | None = None) -> None:
    """Free what ``prepare`` built and hand the heap back to the system."""
    from mcdask.runtime.plugin import release_memory

    for k in [workload] if workload else list(_PREPARED):
        _PREPARED.pop(k, None)
    release_memory()
