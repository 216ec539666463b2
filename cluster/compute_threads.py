"""Put a device's model threads under its compute quota (``MCDASK_COMPUTE_THREADS``).

A farm device is a cgroup with a child ``compute`` (see ``cluster.cgroups.Cgroups``).
TensorFlow's own threads (named ``tf_*``), which run the model's kernels, go there, at the
share calibrated on whole AlexNet. Every Python thread stays in the device cgroup, at the
kind's runtime share: Dask's event loop, comms and monitors, and the task thread that calls
the model (its Python glue and TensorFlow's dispatch). A Pi runs that code at the speed of
a Pi core running Python, about 10x behind this host, not at the 50x a CPU quota sized on
AlexNet would impose. Threads a placed thread starts inherit its cgroup.

Runs inside the device's process; imports neither TensorFlow nor Dask.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .cgroups import COMPUTE_CGROUP

#: the cgroup file (``tasks`` or ``cgroup.threads``) the farm hands each worker
ENV = "MCDASK_COMPUTE_THREADS"
MODEL_THREAD_PREFIX = "tf_"


def target() -> str | None:
    return os.environ.get(ENV) or None


def threads() -> dict[int, str]:
    """This process's threads: ``{tid: name}`` as the kernel knows them."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            out[int(tid)] = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:  # the thread ended
            pass
    return out


def place(tids: list[int]) -> list[int]:
    """Move ``tids`` under the compute quota; returns those moved (none outside a farm)."""
    path = target()
    if not path:
        return []
    moved = []
    for tid in tids:
        try:
            with open(path, "w") as f:
                f.write(str(tid))
            moved.append(tid)
        except ProcessLookupError:  # the thread ended meanwhile
            pass
    return moved


def place_model_threads() -> list[int]:
    """TensorFlow's threads of this process (create them first: run one op)."""
    return place([t for t, name in threads().items() if name.startswith(MODEL_THREAD_PREFIX)])


def cpu_cgroup(tid: int, pid: int | str = "self") -> str:
    """The cpu-controller cgroup path of thread ``tid`` of process ``pid``."""
    for line in Path(f"/proc/{pid}/task/{tid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if ctrls == "" or "cpu" in ctrls.split(","):
            return path
    return ""


def is_compute(cgroup: str) -> bool:
    """Whether a cgroup path (``cpu_cgroup``) is a farm device's compute cgroup."""
    return Path(cgroup).name == COMPUTE_CGROUP


def placement() -> dict:
    """Where this process's threads are: for tests and ``farm status``."""
    main = threading.main_thread().native_id
    where = target()
    placed: list[dict] = []
    for tid, name in sorted(threads().items()):
        try:
            placed.append({"tid": tid, "name": name, "main": tid == main, "cgroup": cpu_cgroup(tid)})
        except OSError:
            pass
    return {"target": where, "threads": placed}
