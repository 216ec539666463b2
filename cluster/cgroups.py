"""The farm's cgroups: where they live (``Cgroups``: v1 or v2 mounts, per-device directories,
memory limit, CPU quotas, freezer), the pids in them, and finding, thawing and removing
cgroup trees (``farm down`` cleans by the directory name ``mcdask-farm``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import FarmError

CGROUP_DIR_NAME = "mcdask-farm"
#: the child cgroup of a device that holds its model threads
COMPUTE_CGROUP = "compute"
#: the cgroup (under the farm's CPU weight) where ``farm up`` times this host before any device exists
HOST_TIMING_CGROUP = "host-timing"
#: the largest CPU weight per cgroup version (v1 ``cpu.shares``, v2 ``cpu.weight``)
MAX_CPU_WEIGHT = {1: 262144, 2: 10000}


@dataclass(frozen=True)
class Cgroups:
    """Where the farm's cgroups live. v1: one directory per controller (cpu, memory and, when
    that hierarchy is mounted, freezer), each ``<mount>/<this process's cgroup>/mcdask-farm``,
    so the farm stays inside its caller's accounting. v2: ``<unified mount>/mcdask-farm`` with
    the cpu and memory controllers (every v2 cgroup has ``cgroup.freeze``).

    A device is ``<base>/<device>`` (memory limit; CPU quota of the whole device) with a child
    ``compute`` (CPU quota of the threads that run the model). The worker process starts in
    the device cgroup; ``cluster.compute_threads`` moves its model threads into ``compute``.
    Under v2 ``compute`` is a threaded cgroup (a thread-granular cpu controller)."""

    version: int
    bases: tuple[str, ...]  # v1: (cpu base, memory base[, freezer base]); v2: (base,)

    @classmethod
    def detect(cls) -> Cgroups:
        mounts = _cgroup_mounts()
        own = _own_cgroups()
        if "cpu" in mounts["v1"] and "memory" in mounts["v1"]:
            base = {c: Path(mounts["v1"][c]) / own.get(c, "/").lstrip("/") / CGROUP_DIR_NAME
                    for c in ("cpu", "memory", "freezer") if c in mounts["v1"]}
            for c in ("cpu", "memory"):
                if not os.access(base[c].parent, os.W_OK):
                    raise FarmError(f"cgroup directory {base[c].parent} is not writable")
            usable = [c for c in ("cpu", "memory", "freezer") if c in base and os.access(base[c].parent, os.W_OK)]
            return cls(1, tuple(str(base[c]) for c in usable))
        if mounts["v2"]:
            root = Path(mounts["v2"])
            ctrls = (root / "cgroup.controllers").read_text().split() if (root / "cgroup.controllers").exists() else []
            if {"cpu", "memory"} <= set(ctrls) and os.access(root, os.W_OK):
                return cls(2, (str(root / CGROUP_DIR_NAME),))
        raise FarmError("no writable cgroup cpu and memory controllers (cgroup v1 'cpu' and 'memory' "
                        "hierarchies, or cgroup v2 with both controllers)")

    def dirs(self, device: str) -> list[str]:
        return [str(Path(b) / device) for b in self.bases]

    def _cpu_dir(self, device: str, compute: bool = False) -> Path:
        d = Path(self.dirs(device)[0])
        return d / COMPUTE_CGROUP if compute else d

    def create(self, device: str, memory_bytes: int) -> list[str]:
        if self.version == 2:
            base = Path(self.bases[0])
            base.mkdir(exist_ok=True)
            _write(base / "cgroup.subtree_control", "+cpu +memory")
        for d in self.dirs(device):
            Path(d).mkdir(parents=True, exist_ok=True)
        compute = self._cpu_dir(device, compute=True)
        compute.mkdir(exist_ok=True)
        if self.version == 2:
            _write(compute / "cgroup.type", "threaded")
            _write(Path(self.dirs(device)[0]) / "cgroup.subtree_control", "+cpu")
        self.set_memory(device, memory_bytes)
        self.set_cpu(device, None, None)
        self.prioritise()
        return self.dirs(device)

    def host_timing_dir(self) -> str:
        """A cgroup at the farm's CPU weight (``prioritise``) for timing this host before any
        device exists, so a busy host's other programs slow that timing as little as they slow
        the devices. Remove it with ``remove_cgroup_tree``."""
        base = Path(self.bases[0])
        base.mkdir(exist_ok=True)
        if self.version == 2:
            _write(base / "cgroup.subtree_control", "+cpu +memory")
        self.prioritise()
        d = base / HOST_TIMING_CGROUP
        d.mkdir(exist_ok=True)
        return str(d)

    def prioritise(self) -> None:
        """Give the farm the highest CPU weight against this host's other programs: a device's
        quota caps its CPU time but does not guarantee it, and on a busy host the devices would
        run slower than their calibrated kind. Up to their quotas they now come first."""
        base = Path(self.bases[0])
        _write(base / ("cpu.shares" if self.version == 1 else "cpu.weight"),
               str(MAX_CPU_WEIGHT[self.version]))

    def set_memory(self, device: str, memory_bytes: int) -> None:
        if self.version == 1:
            mem = Path(self.dirs(device)[1])
            _write(mem / "memory.limit_in_bytes", str(memory_bytes))
            if (mem / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit
                try:
                    _write(mem / "memory.memsw.limit_in_bytes", str(memory_bytes))
                except OSError:
                    pass
        else:
            d = Path(self.dirs(device)[0])
            _write(d / "memory.max", str(memory_bytes))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")

    def set_cpu(self, device: str, total: tuple[int, int] | None,
                compute: tuple[int, int] | None = None) -> None:
        """``(quota_us, period_us)`` of the whole device and of its compute threads; ``None``
        for no limit."""
        parent, child = self._cpu_dir(device), self._cpu_dir(device, compute=True)
        if self.version == 1:  # v1 refuses a child quota above its parent's: lift both, then set
            for d in (child, parent):
                if d.exists():
                    _write(d / "cpu.cfs_quota_us", "-1")
            for d, quota in ((parent, total), (child, compute)):
                if quota and d.exists():
                    _write(d / "cpu.cfs_period_us", str(quota[1]))
                    _write(d / "cpu.cfs_quota_us", str(quota[0]))
        else:
            for d, quota in ((parent, total), (child, compute)):
                if d.exists():
                    _write(d / "cpu.max", f"{quota[0]} {quota[1]}" if quota else "max 100000")

    def read_cpu(self, device: str, compute: bool = False) -> tuple[int, int] | None:
        d = self._cpu_dir(device, compute)
        try:
            if self.version == 1:
                quota_us = int((d / "cpu.cfs_quota_us").read_text())
                return None if quota_us < 0 else (quota_us, int((d / "cpu.cfs_period_us").read_text()))
            q, p = (d / "cpu.max").read_text().split()
            return None if q == "max" else (int(q), int(p))
        except (OSError, ValueError):
            return None

    def all_dirs(self, device: str) -> list[str]:
        """Every cgroup directory of the device, children (``compute``) first: the order
        ``rmdir`` needs."""
        return [str(self._cpu_dir(device, compute=True)), *self.dirs(device)]

    def freezer_dir(self, device: str) -> Path | None:
        """The cgroup whose freezer stops every thread of the device, or ``None`` when this
        farm has none (v1 without a freezer hierarchy, or a device started before it had one)."""
        if self.version == 2:
            d = Path(self.dirs(device)[0])
        elif len(self.bases) > 2:
            d = Path(self.dirs(device)[2])
        else:
            return None
        return d if (d / _FREEZER[self.version][0]).exists() else None

    def set_frozen(self, device: str, frozen: bool) -> None:
        """Freeze or thaw the device (it must have a ``freezer_dir``)."""
        file, on, off = _FREEZER[self.version]
        d = self.freezer_dir(device)
        if d is None:
            raise FarmError(f"{device} has no freezer cgroup to {'freeze' if frozen else 'thaw'} it with")
        _write(d / file, on if frozen else off)

    def freezer_state(self, device: str) -> str | None:
        """``"frozen"``, ``"freezing"`` (some task not stopped yet), ``"thawed"``, or ``None``
        without a freezer."""
        d = self.freezer_dir(device)
        if d is None:
            return None
        try:
            if self.version == 1:
                return (d / "freezer.state").read_text().strip().lower()
            if (d / "cgroup.freeze").read_text().strip() == "0":
                return "thawed"
            return "frozen" if "frozen 1" in (d / "cgroup.events").read_text() else "freezing"
        except OSError:
            return None

    def procs_files(self, device: str) -> list[str]:
        return [str(Path(d) / "cgroup.procs") for d in self.dirs(device)]

    def compute_threads_file(self, device: str) -> str:
        """Writing a thread id here puts that thread under the device's compute quota."""
        return str(self._cpu_dir(device, compute=True) / ("tasks" if self.version == 1 else "cgroup.threads"))

    def to_dict(self) -> dict:
        return {"version": self.version, "bases": list(self.bases)}

    @classmethod
    def from_dict(cls, d: dict) -> Cgroups:
        return cls(int(d["version"]), tuple(d["bases"]))


#: per cgroup version: the freezer file, its frozen value, its thawed value
_FREEZER = {1: ("freezer.state", "FROZEN", "THAWED"), 2: ("cgroup.freeze", "1", "0")}


def thaw_cgroup_tree(base: str) -> None:
    """Thaw every frozen cgroup under ``base`` (v1 ignores SIGKILL in a frozen cgroup until
    it thaws, so ``farm down`` thaws before it kills)."""
    for file, _frozen, off in _FREEZER.values():
        for f in Path(base).rglob(file):
            try:
                if f.read_text().strip() != off:
                    _write(f, off)
            except OSError:
                pass


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _cgroup_mounts() -> dict:
    v1, v2 = {}, None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, post_f = pre.split(), post.split()
        if not post_f:
            continue
        if post_f[0] == "cgroup":
            for opt in post_f[2].split(","):
                if opt in ("cpu", "memory", "freezer"):
                    v1[opt] = fields[4]
        elif post_f[0] == "cgroup2":
            v2 = fields[4]
    return {"v1": v1, "v2": v2}


def _own_cgroups() -> dict[str, str]:
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def cgroup_pids(dirs: list[str]) -> list[int]:
    pids: set[int] = set()
    for d in dirs:
        try:
            pids.update(int(x) for x in (Path(d) / "cgroup.procs").read_text().split())
        except OSError:
            pass
    return sorted(pids)


def find_farm_cgroups() -> list[str]:
    """Every ``mcdask-farm`` directory in the cgroup mounts (depth <= 4): for cleaning when
    the state file is gone."""
    mounts = _cgroup_mounts()
    roots = list(mounts["v1"].values()) + ([mounts["v2"]] if mounts["v2"] else [])
    found = []
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            depth = Path(dirpath).relative_to(root).parts
            if Path(dirpath).name == CGROUP_DIR_NAME:
                found.append(dirpath)
                dirnames[:] = []
            elif len(depth) >= 4:
                dirnames[:] = []
    return found


def remove_cgroup_tree(base: str, timeout: float = 10) -> bool:
    """rmdir ``base`` and its children (deepest first); True when gone."""
    deadline = time.monotonic() + timeout
    while True:
        p = Path(base)
        if not p.exists():
            return True
        children = sorted((d for d in p.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts))
        for d in [*children, p]:
            try:
                d.rmdir()
            except OSError:
                pass
        if not p.exists():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
