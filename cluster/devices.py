"""Device kinds and farm specs as plain data; how a kind becomes a CPU quota and a shaped link.

A *device kind* says how fast a device is (the time of one whole-AlexNet inference, or a
fixed share of one host core), how much memory it has, and its network link (bandwidth and
round-trip time). A *farm spec* lists kinds and how many devices of each to emulate.

Built-in kinds and their sources (``../shared/reference/musical-chair-paper.md``):

* ``pi3``: Raspberry Pi 3 Model B. AlexNet 0.52 s per inference: the published single-Pi
  figure (CK/ReQuEST reproduction 0.532, 0.526, 0.519 s; paper section 3.6). 1 GiB RAM.
  Link: the paper's WiFi, 62.24 Mbit/s and 8.83 ms client-to-client (RA-L section VI).
* ``pi4``: Raspberry Pi 4 Model B, 4 GB variant. No published AlexNet time on the paper's
  setup exists; *derived*: 0.52 s / 2 = 0.26 s, from A. Allan, "Benchmarking Machine Learning
  on the New Raspberry Pi 4, Model B" (Hackster.io, 2019), who measured full TensorFlow
  inference about 2x faster on a Pi 4 than on a Pi 3. Treat it as +-30 %.
  Link: the same WiFi as the paper (a farm shares one access point).
* ``tx2-cpu``: NVIDIA Jetson TX2 running on its CPU only. AlexNet 0.20 s (CK/ReQuEST:
  0.2007-0.2015 s; paper section 3.6). 8 GiB RAM. Link: the same WiFi.

How a kind maps onto this host (``cpu_share``, ``cfs_quota``, ``shaped_link``): a device's
*compute* (TensorFlow's threads, which run the model's kernels) gets
``host_alexnet_s / alexnet_s`` of one host core, where ``host_alexnet_s`` is measured on this
machine at ``farm up`` (one thread, ``python -m mcdask.runtime.timing``). The rest of the worker, its
Python (Dask's event loop, comms, serialisation, heartbeats, the task thread's glue), is its
*runtime*: on a real Pi it runs on the
cores TensorFlow leaves, at the speed of a Pi core running Python, which is far less behind
this host than the model is. It gets ``runtime_share`` of a host core on top of the compute
share (see ``RUNTIME_SHARE_PI3``). ``time_scale`` K runs every device K times faster: K times
both shares, K times the bandwidth, 1/K the delay.

``rtt_ms`` is the round trip *between two devices* (the paper's client-to-client figure):
each device's link adds ``rtt_ms / 4`` in each direction, so device <-> device is ``rtt_ms``
and host (scheduler, client) <-> device is ``rtt_ms / 2``.

The memory and link of the built-in kinds come from the planner's kinds (``mcdask.model.kinds``):
one device model for planner, farm and bench. This module imports neither TensorFlow nor Dask.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from mcdask.model.kinds import pi3 as _pi3
from mcdask.model.kinds import tx2 as _tx2

from .errors import FarmSpecError

SPEC_VERSION = 1
#: the kernel refuses a CFS quota below 1 ms
MIN_QUOTA_US = 1000
#: preferred CFS period; a small share gets a longer one so that its quota stays >= 1 ms
BASE_PERIOD_US = 20_000
MAX_PERIOD_US = 1_000_000
#: One Pi 3 core running scalar code (Python: Dask's event loop) as a fraction of one core
#: of this host: about 0.1. J. Whitham, "Relative speed of Raspberry Pi, Pi 2, and desktop
#: PC" (2015): a Core i3-3220 runs integer/FP C code 10-11x faster than a Pi 2 core; a Pi 3
#: core is about 1.5x a Pi 2 core (ARM, Cortex-A53 vs A7); this host's EPYC core is about
#: 1.5x an i3-3220. So one Pi 3 core ~ 1/10 of a host core, +-50 %. An idle Dask worker
#: here uses 23 ms of CPU per second (profiler, tick monitor, heartbeats): under the 2 %
#: compute share alone it would take more than the whole device.
RUNTIME_SHARE_PI3 = 0.10
#: the workload the device speeds are stated for
CALIBRATION_WORKLOAD = "alexnet"

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,9}$")
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | float | str) -> int:
    """``1073741824``, ``"1GiB"``, ``"512 MiB"`` or ``"1.5GB"`` as a number of bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise FarmSpecError(f"memory must be positive, got {value!r}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise FarmSpecError(f"cannot read memory size {value!r}; write e.g. 1GiB, 512MiB or 2GB")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise FarmSpecError(f"memory must be positive, got {value!r}")
    return n


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % (size // 16 or 1) == 0:
            return f"{n / size:g}{unit}"
    return str(n)


@dataclass(frozen=True)
class DeviceKind:
    """One kind of device. Exactly one of ``alexnet_s`` (seconds per whole-AlexNet inference
    on the real device) and ``cpu_share`` (fraction of one host core) is set."""

    name: str
    memory_bytes: int
    link_mbit: float
    rtt_ms: float
    alexnet_s: float | None = None
    cpu_share: float | None = None
    source: str = ""
    #: host-core fraction for the worker's runtime threads at time-scale 1 (on top of compute)
    runtime_share: float = RUNTIME_SHARE_PI3

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise FarmSpecError(f"device kind name {self.name!r}: use 1-10 characters a-z, 0-9, '-', "
                                "starting with a letter (it becomes part of worker and namespace names)")
        if (self.alexnet_s is None) == (self.cpu_share is None):
            raise FarmSpecError(f"device kind {self.name!r}: give exactly one of alexnet_s (seconds per "
                                f"AlexNet inference) and cpu_share (fraction of a host core); got "
                                f"alexnet_s={self.alexnet_s!r}, cpu_share={self.cpu_share!r}")
        for what, v in (("alexnet_s", self.alexnet_s), ("cpu_share", self.cpu_share),
                        ("runtime_share", self.runtime_share),
                        ("link_mbit", self.link_mbit), ("memory_bytes", self.memory_bytes)):
            if v is not None and not v > 0:
                raise FarmSpecError(f"device kind {self.name!r}: {what} must be > 0, got {v!r}")
        if not self.rtt_ms >= 0:
            raise FarmSpecError(f"device kind {self.name!r}: rtt_ms must be >= 0, got {self.rtt_ms!r}")

    def cpu_share_on(self, host_alexnet_s: float | None, time_scale: float = 1.0) -> float:
        """Fraction of one host core this kind gets, given this host's AlexNet time."""
        if self.cpu_share is not None:
            share = self.cpu_share * time_scale
        else:
            assert self.alexnet_s is not None, "a kind without cpu_share has alexnet_s (__post_init__ checks)"
            if not host_alexnet_s or host_alexnet_s <= 0:
                raise FarmSpecError(f"device kind {self.name!r} is stated as alexnet_s={self.alexnet_s}; "
                                    "it needs this host's measured AlexNet time, got "
                                    f"{host_alexnet_s!r}")
            share = time_scale * host_alexnet_s / self.alexnet_s
        if share > 1.0:
            raise FarmSpecError(
                f"device kind {self.name!r} needs {share:.2f} host cores at time_scale {time_scale:g} "
                f"(host AlexNet {host_alexnet_s}s, device {self.alexnet_s}s); a device runs one thread, "
                "so lower --time-scale until the share is <= 1")
        return share

    def runtime_share_on(self, time_scale: float = 1.0) -> float:
        """Host-core fraction for the worker's runtime threads (Dask), besides its compute."""
        return self.runtime_share * time_scale

    def target_alexnet_s(self, host_alexnet_s: float | None, time_scale: float = 1.0) -> float | None:
        """The whole-AlexNet time a device of this kind should show on this host."""
        if self.alexnet_s is not None:
            return self.alexnet_s / time_scale
        if host_alexnet_s:
            return host_alexnet_s / self.cpu_share_on(host_alexnet_s, time_scale)
        return None

    def to_dict(self) -> dict:
        """The spec-file form of this kind (see ``spec_from_dict``)."""
        speed = {"alexnet_s": self.alexnet_s} if self.alexnet_s is not None else {"cpu_share": self.cpu_share}
        return {**speed, "runtime_share": self.runtime_share, "memory": self.memory_bytes,
                "link": {"mbit": self.link_mbit, "rtt_ms": self.rtt_ms},
                **({"source": self.source} if self.source else {})}


def cfs_quota(share: float, max_cores: float = 1.0) -> tuple[int, int]:
    """``(quota_us, period_us)`` for a CPU share of one core (up to ``max_cores`` cores).

    The period is ``BASE_PERIOD_US`` unless the quota would fall under the kernel's 1 ms
    minimum; then the quota is 1 ms and the period grows (a 1.8 % share: 1 ms per 56 ms).
    """
    if not 0 < share <= max_cores:
        raise FarmSpecError(f"CPU share must be in (0, {max_cores:g}], got {share!r}")
    period = BASE_PERIOD_US
    quota = round(share * period)
    if quota < MIN_QUOTA_US:
        quota = MIN_QUOTA_US
        period = round(MIN_QUOTA_US / share)
    if period > MAX_PERIOD_US:
        raise FarmSpecError(f"CPU share {share:.5f} is too small: it needs a period over 1 s; raise "
                            "--time-scale or the device's speed")
    return quota, period


@dataclass(frozen=True)
class Link:
    """A device's shaped link; each direction gets ``rate_mbit`` and ``delay_ms``."""

    rate_mbit: float
    delay_ms: float
    rtt_ms: float

    @property
    def host_rtt_ms(self) -> float:
        """Host (scheduler, client) <-> device: one link, crossed once each way."""
        return self.rtt_ms / 2


#: what the delay line itself adds per crossing (read, thread hand-over, write), measured on
#: this machine: device<->device RTT came out 0.4-0.7 ms above the configured delays
DELAY_LINE_OVERHEAD_MS = 0.12


def shaped_link(kind: DeviceKind, time_scale: float = 1.0) -> Link:
    """Device <-> device RTT is ``kind.rtt_ms``: two links, each crossed once per direction.
    ``delay_ms`` is what each crossing must add on top of the delay line's own overhead."""
    rtt = kind.rtt_ms / time_scale
    return Link(kind.link_mbit * time_scale, max(0.0, rtt / 4 - DELAY_LINE_OVERHEAD_MS), rtt)


#: the paper's WiFi (RA-L section VI): 62.24 Mbit/s, 8.83 ms client-to-client; the planner's pi3
#: link (``mcdask.model.kinds.pi3.WIFI``) is the same figures
WIFI_MBIT = _pi3.WIFI_MBIT
WIFI_RTT_MS = _pi3.WIFI_RTT_MS

KINDS: dict[str, DeviceKind] = {
    "pi3": DeviceKind("pi3", _pi3.MEMORY_BYTES, WIFI_MBIT, WIFI_RTT_MS, alexnet_s=0.52,
                      source="Raspberry Pi 3 B: AlexNet 0.52 s (CK/ReQuEST 0.519-0.532 s); memory and link: "
                             "mcdask.model.kinds.pi3 (1 GiB minus the 64 MiB GPU split; paper WiFi)"),
    "pi4": DeviceKind("pi4", 4 * 2**30, WIFI_MBIT, WIFI_RTT_MS, alexnet_s=0.26,
                      runtime_share=2 * RUNTIME_SHARE_PI3,
                      source="Raspberry Pi 4 B 4 GB: derived 0.52 s / 2 (Allan 2019, full TensorFlow "
                             "about 2x Pi 3; runtime: a 1.5 GHz Cortex-A72 core, about 2x a Pi 3 "
                             "core), paper WiFi"),
    "tx2-cpu": DeviceKind("tx2-cpu", _tx2.MEMORY_BYTES, WIFI_MBIT, WIFI_RTT_MS, alexnet_s=0.20,
                          runtime_share=2 * RUNTIME_SHARE_PI3,
                          source="Jetson TX2 CPU only: AlexNet 0.20 s (CK/ReQuEST 0.2007-0.2015 s); memory: "
                                 "mcdask.model.kinds.tx2 (8 GB less 1 GB for the OS); "
                                 "runtime: a 2 GHz Cortex-A57 core, about 2x a Pi 3 core"),
}


@dataclass(frozen=True)
class Device:
    """One emulated device: its stable worker name and its kind."""

    name: str
    kind: DeviceKind
    index: int


@dataclass(frozen=True)
class FarmSpec:
    """Kinds and counts, in the order given. Devices are named ``<kind>-NN`` (``pi3-00``)."""

    kinds: dict[str, DeviceKind]
    counts: tuple[tuple[str, int], ...]
    version: int = SPEC_VERSION
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.version != SPEC_VERSION:
            raise FarmSpecError(f"farm spec version {self.version!r}; this mcdask reads version {SPEC_VERSION}")
        if not self.counts:
            raise FarmSpecError("farm spec lists no devices; add e.g. `devices: [{kind: pi3, count: 4}]`")
        seen = set()
        for kind, n in self.counts:
            if kind not in self.kinds:
                raise FarmSpecError(f"farm spec uses device kind {kind!r}, which it does not define; "
                                    f"known kinds: {', '.join(sorted(self.kinds))}")
            if kind in seen:
                raise FarmSpecError(f"farm spec lists kind {kind!r} twice; give one count per kind")
            seen.add(kind)
            if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > 99:
                raise FarmSpecError(f"farm spec: count of {kind!r} must be an integer 1..99, got {n!r}")
        if self.size > 200:
            raise FarmSpecError(f"farm of {self.size} devices: at most 200 fit the farm's /24 subnet")

    @property
    def size(self) -> int:
        return sum(n for _, n in self.counts)

    def devices(self) -> list[Device]:
        out: list[Device] = []
        for kind, n in self.counts:
            for i in range(n):
                out.append(Device(f"{kind}-{i:02d}", self.kinds[kind], len(out)))
        return out

    @classmethod
    def uniform(cls, n: int, kind: str = "pi3", link_mbit: float | None = None,
                rtt_ms: float | None = None) -> FarmSpec:
        """``n`` devices of one built-in kind, optionally with another link."""
        if kind not in KINDS:
            raise FarmSpecError(f"unknown device kind {kind!r}; built-in kinds: {', '.join(KINDS)} "
                                "(define others in a --spec file)")
        k = override_link(KINDS[kind], link_mbit, rtt_ms)
        return cls({kind: k}, ((kind, n),))

    def with_link(self, link_mbit: float | None, rtt_ms: float | None) -> FarmSpec:
        return replace(self, kinds={n: override_link(k, link_mbit, rtt_ms) for n, k in self.kinds.items()})

    def to_dict(self) -> dict:
        return {"version": self.version,
                "kinds": {n: self.kinds[n].to_dict() for n, _ in self.counts},
                "devices": [{"kind": k, "count": n} for k, n in self.counts],
                **({"env": dict(self.env)} if self.env else {})}


def override_link(kind: DeviceKind, link_mbit: float | None, rtt_ms: float | None) -> DeviceKind:
    return replace(kind, link_mbit=kind.link_mbit if link_mbit is None else float(link_mbit),
                   rtt_ms=kind.rtt_ms if rtt_ms is None else float(rtt_ms))


def spec_from_dict(data: dict, origin: str = "spec") -> FarmSpec:
    """Read the YAML/JSON form (see ``cluster/farms/mixed.yaml``)."""
    if not isinstance(data, dict):
        raise FarmSpecError(f"{origin}: expected a mapping with 'kinds' and 'devices', got {type(data).__name__}")
    unknown = set(data) - {"version", "kinds", "devices", "env"}
    if unknown:
        raise FarmSpecError(f"{origin}: unknown keys {sorted(unknown)}; allowed: version, kinds, devices, env")
    kinds = dict(KINDS)
    for name, body in (data.get("kinds") or {}).items():
        kinds[name] = _kind_from_dict(str(name), body or {}, origin)
    devices = data.get("devices")
    if not isinstance(devices, list):
        raise FarmSpecError(f"{origin}: 'devices' must be a list like [{{kind: pi3, count: 4}}]")
    counts = []
    for entry in devices:
        if not isinstance(entry, dict) or "kind" not in entry:
            raise FarmSpecError(f"{origin}: each device entry needs 'kind' (and 'count'), got {entry!r}")
        counts.append((str(entry["kind"]), entry.get("count", 1)))
    env = {str(k): str(v) for k, v in (data.get("env") or {}).items()}
    return FarmSpec(kinds, tuple(counts), int(data.get("version", SPEC_VERSION)), env)


def _kind_from_dict(name: str, body: dict, origin: str) -> DeviceKind:
    allowed = {"base", "alexnet_s", "cpu_share", "runtime_share", "memory", "link", "source"}
    unknown = set(body) - allowed
    if unknown:
        raise FarmSpecError(f"{origin}: kind {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    base = body.get("base", name if name in KINDS else None)
    if base is not None and base not in KINDS:
        raise FarmSpecError(f"{origin}: kind {name!r} has base {base!r}; built-in kinds: {', '.join(KINDS)}")
    b = KINDS[base] if base else None
    link = body.get("link") or {}
    if not isinstance(link, dict) or set(link) - {"mbit", "rtt_ms"}:
        raise FarmSpecError(f"{origin}: kind {name!r}: link must be {{mbit: ..., rtt_ms: ...}}, got {link!r}")
    speed = {}
    if "alexnet_s" in body or "cpu_share" in body:
        speed = {"alexnet_s": body.get("alexnet_s"), "cpu_share": body.get("cpu_share")}
    elif b:
        speed = {"alexnet_s": b.alexnet_s, "cpu_share": b.cpu_share}
    runtime = body.get("runtime_share", b.runtime_share if b else RUNTIME_SHARE_PI3)
    memory = body.get("memory", b.memory_bytes if b else None)
    mbit = link.get("mbit", b.link_mbit if b else None)
    rtt = link.get("rtt_ms", b.rtt_ms if b else None)
    missing = [k for k, v in (("alexnet_s or cpu_share", speed), ("memory", memory), ("link.mbit", mbit),
                              ("link.rtt_ms", rtt)) if v in (None, {})]
    if missing:
        raise FarmSpecError(f"{origin}: kind {name!r} lacks {', '.join(missing)} (and has no built-in base)")
    assert memory is not None and mbit is not None and rtt is not None, "`missing` above names any None"
    alexnet_s, cpu_share = speed.get("alexnet_s"), speed.get("cpu_share")
    try:
        return DeviceKind(name, parse_bytes(memory), float(mbit), float(rtt),
                          alexnet_s=None if alexnet_s is None else float(alexnet_s),
                          cpu_share=None if cpu_share is None else float(cpu_share),
                          runtime_share=float(runtime),
                          source=str(body.get("source", b.source if b and not body.keys() - {"base"} else "")))
    except (TypeError, ValueError) as e:
        if isinstance(e, FarmSpecError):
            raise
        raise FarmSpecError(f"{origin}: kind {name!r}: {e}") from None


def load_spec(path: str | Path) -> FarmSpec:
    """Read a farm spec YAML file."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise FarmSpecError(f"cannot read farm spec {p}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise FarmSpecError(f"farm spec {p} is not valid YAML: {e}") from None
    return spec_from_dict(data, str(p))


def max_devices_by_cpu(share: float, cores: float, reserve_cores: float) -> int:
    """How many devices of ``share`` fit ``cores`` after ``reserve_cores`` for scheduler/client."""
    return max(0, math.floor((cores - reserve_cores) / share))
