"""Linux plumbing of the farm: network namespaces, veth links on a bridge, ``tc`` shaping and
cgroup CPU/memory limits. Every function here only touches objects named with the farm's
prefix ``mcd`` (bridge ``mcdask-br0``, namespaces ``mcd-<device>``, TAPs ``mcdh<i>``/``mcdn<i>``,
cgroups ``mcdask-farm/<device>``), so cleaning by name never touches anything else.

Addresses: ``10.77.0.0/24`` lives only on the bridge this module creates; the host side is
``10.77.0.1`` and device ``i`` is ``10.77.0.(10 + i)``. Namespaces get no default route, so
farm traffic cannot leave this machine.

Each device's link is a TAP pair joined by the delay line ``cluster.linkd`` (this kernel has
no ``netem``), with an HTB rate limit on the egress of both TAPs.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import FarmError

PREFIX = "mcd"
BRIDGE = "mcdask-br0"
SUBNET = "10.77.0"
HOST_IP = f"{SUBNET}.1"
NETNS_DIR = Path("/run/netns")
CGROUP_DIR_NAME = "mcdask-farm"
#: the child cgroup of a device that holds its model threads
COMPUTE_CGROUP = "compute"
CLONE_NEWNET = 0x40000000
#: farm links carry jumbo frames: at 62 Mbit/s a 9000-byte frame takes 1.2 ms on the wire,
#: and the delay line copies 6x fewer frames than at 1500 bytes
MTU = 9000


def device_ip(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


def netns_name(device: str) -> str:
    return f"{PREFIX}-{device}"


def tap_names(index: int) -> tuple[str, str]:
    """(host side, device side) TAP names; at most 15 characters each."""
    return f"{PREFIX}h{index}", f"{PREFIX}n{index}"


def sh(*args: str, check: bool = True, netns: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command (inside ``netns`` if given); raise ``FarmError`` with its stderr on failure."""
    cmd = list(args)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise FarmError(f"command not found: {cmd[0]!r}; install iproute2 (ip, tc)") from None
    if check and p.returncode != 0:
        raise FarmError(f"`{' '.join(cmd)}` failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def run_json(cmd: list[str], *, timeout_s: float = 600, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` (a Python tool that ends with one JSON line) and return that object; raise
    ``FarmError`` with its stderr if it fails, times out or prints none. TensorFlow in it is
    quiet and CPU-only."""
    shown = " ".join(["python", *cmd[1:]] if cmd and cmd[0] == sys.executable else cmd)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise FarmError(f"`{shown}` took over {timeout_s:.0f} s") from None
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    try:
        if p.returncode != 0:
            raise ValueError
        out = json.loads(lines[-1])
        if not isinstance(out, dict):
            raise ValueError
    except (IndexError, ValueError):
        raise FarmError(f"`{shown}` printed no JSON line (exit {p.returncode}); stderr: "
                        f"{p.stderr.strip()[-800:]}") from None
    return out


# --------------------------------------------------------------------------- capability probe

def probe() -> str | None:
    """``None`` if this process can build the emulated farm, else the reason it cannot.
    ``MCDASK_FARM_FORCE_LOCAL=1`` forces the uncapped local fallback (for tests)."""
    if os.environ.get("MCDASK_FARM_FORCE_LOCAL", "") not in ("", "0"):
        return "MCDASK_FARM_FORCE_LOCAL is set"
    if os.geteuid() != 0:
        return "not running as root (network namespaces, tc and cgroups need root)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' (iproute2) is not installed"
    name = f"{PREFIX}-probe-{os.getpid()}"
    p = sh("ip", "netns", "add", name, check=False)
    if p.returncode != 0:
        return f"cannot create a network namespace: {p.stderr.strip()}"
    sh("ip", "netns", "del", name, check=False)
    try:
        Cgroups.detect()
    except FarmError as e:
        return str(e)
    return None


# --------------------------------------------------------------------------- network

def add_bridge() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")


def add_netns(device: str) -> str:
    ns = netns_name(device)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "set", "lo", "up", netns=ns)
    return ns


def attach_device(index: int, device: str) -> tuple[str, str]:
    """Wire one device's TAP pair (created by ``cluster.linkd``): ``mcdn<i>`` into the device's
    namespace with its address, ``mcdh<i>`` onto the bridge. Returns (host tap, device tap)."""
    ns = netns_name(device)
    host_if, ns_if = tap_names(index)
    sh("ip", "link", "set", ns_if, "netns", ns)
    sh("ip", "link", "set", host_if, "mtu", str(MTU), "master", BRIDGE, "up")
    sh("ip", "link", "set", ns_if, "mtu", str(MTU), "up", netns=ns)
    sh("ip", "addr", "add", f"{device_ip(index)}/24", "dev", ns_if, netns=ns)
    sh("ip", "link", "set", BRIDGE, "mtu", str(MTU))
    return host_if, ns_if


def shape(dev: str, rate_mbit: float, netns: str | None = None) -> None:
    """Egress of ``dev`` limited to ``rate_mbit`` by one HTB class (the delay is ``linkd``'s)."""
    kbit = max(8, round(rate_mbit * 1000))
    # bucket: 1 ms of traffic but at least two full frames, so HTB is smooth but never stuck
    burst = max(2 * (MTU + 14), kbit * 1000 // 8 // 1000)
    sh("tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1", netns=netns)
    sh("tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", f"{kbit}kbit",
       "ceil", f"{kbit}kbit", "burst", str(burst), "cburst", str(burst), netns=netns)
    sh("tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "pfifo", "limit", "10000", netns=netns)


def set_link_up(dev: str, up: bool, netns: str | None = None) -> None:
    """Bring ``dev`` administratively up or down: down, it neither sends nor receives, and the
    device's kernel drops the routes through it until it comes up again."""
    sh("ip", "link", "set", dev, "up" if up else "down", netns=netns)


def link_is_up(dev: str, netns: str | None = None) -> bool:
    """Whether ``dev`` exists and is administratively up."""
    out = sh("ip", "-o", "link", "show", "dev", dev, netns=netns, check=False).stdout
    flags = re.search(r"<([^>]*)>", out)
    return bool(flags) and "UP" in flags.group(1).split(",")


def reachable(ip: str, timeout_s: float = 1.0, port: int = 9) -> bool:
    """Whether this host reaches ``ip`` over TCP: an accepted or a refused connection both
    mean the packets went there and back (port 9 is normally closed, so nothing is disturbed)."""
    with socket.socket() as s:
        s.settimeout(timeout_s)
        try:
            s.connect((ip, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return True


def qdisc_summary(dev: str, netns: str | None = None) -> str:
    return sh("tc", "qdisc", "show", "dev", dev, netns=netns, check=False).stdout.strip()


def our_links() -> list[str]:
    out = sh("ip", "-o", "link", "show", check=False).stdout
    names = [re.split(r"[@:]", line.split(":", 2)[1].strip())[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n == BRIDGE or re.fullmatch(rf"{PREFIX}[hn]\d+", n)]


def our_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


def our_qdiscs() -> list[str]:
    """Interfaces of ours (on the host) that carry a non-default root qdisc."""
    out = sh("tc", "qdisc", "show", check=False).stdout
    devs = set()
    for line in out.splitlines():
        m = re.search(r" dev (\S+) root", line)
        if m and (m.group(1) == BRIDGE or m.group(1).startswith(PREFIX)) and ("htb" in line or "netem" in line):
            devs.add(m.group(1))
    return sorted(devs)


def delete_link(name: str) -> None:
    sh("tc", "qdisc", "del", "dev", name, "root", check=False)
    sh("ip", "link", "del", name, check=False)


def delete_netns(name: str) -> None:
    sh("ip", "netns", "del", name, check=False)


def netns_pids(name: str) -> list[int]:
    out = sh("ip", "netns", "pids", name, check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


_libc = None


def enter_netns(path: str) -> None:
    """Move the calling process into the network namespace at ``path`` (Python 3.11 has no
    ``os.setns``). Used in a ``preexec_fn``, between fork and exec."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path})")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- cgroups

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
        return self.dirs(device)

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
                q = int((d / "cpu.cfs_quota_us").read_text())
                return None if q < 0 else (q, int((d / "cpu.cfs_period_us").read_text()))
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
        _write(self.freezer_dir(device) / file, on if frozen else off)

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
    for version, (file, on, off) in _FREEZER.items():
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
    pids = set()
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


# --------------------------------------------------------------------------- processes

MEMBER_ENV = "MCDASK_FARM_MEMBER"


def marked_pids() -> list[int]:
    """Processes started by the farm, found by the ``MCDASK_FARM_MEMBER`` variable in their
    environment (works when the state file is gone)."""
    pids = []
    me = os.getpid()
    needle = MEMBER_ENV.encode() + b"="
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(part.startswith(needle) for part in env.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def kill_pids(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM (and SIGCONT, for a device stopped by ``farm freeze``), then SIGKILL after
    ``grace_s``; returns the pids that were alive."""
    live = [p for p in sorted(set(pids)) if p != os.getpid() and alive(p)]
    for p in live:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in live):
        time.sleep(0.1)
    for p in live:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in live):
        time.sleep(0.05)
    return live


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``R``, ``S``, ``D``, ``T`` stopped, ``Z``, ...), or
    ``None`` when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_until(done, timeout_s: float, what: str, poll_s: float = 0.02) -> float:
    """Poll ``done()`` until it is true; returns the seconds it took. After ``timeout_s``
    raise ``FarmError`` naming ``what`` was waited for."""
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > timeout_s:
            raise FarmError(f"waited {timeout_s:g} s for {what}; it did not happen")
        time.sleep(poll_s)
    return time.monotonic() - t0


def alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own children
    except ChildProcessError:
        pass
    return process_state(pid) not in (None, "Z", "X")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (guards against pid reuse)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
