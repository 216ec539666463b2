"""Device and link profiles: how fast and how big each device is, and how slow the links are.

Plain, versioned data (schema ``mcdask.profile/1``) that a person can read and write. A
profile holds

* **kinds**: one :class:`DeviceKind` per kind of device (``pi3``, ``tx2-cpu``, ...): usable
  memory, the runtime's baseline memory, per-layer compute times and weight memory;
* **devices**: named devices (stable worker names), each of a kind;
* **links**: a default :class:`LinkModel` and optional per-pair overrides. The client (the
  frame source and result sink) is the pseudo-device ``"client"``.

Rules the cost model and the planner rely on, said once here:

* **Whole-layer time**: ``kind.layer_time_s[workload][layer]`` seconds for one frame.
* **Dense shard time** (``units`` output units ``[a, b)`` of a dense layer with ``U`` units),
  first rule that applies:

  1. a measured entry ``kind.shard_time_s[workload][layer][units]``;
  2. the kind's memory-bound dense model, if given:
     ``dense_fixed_s + dense_s_per_weight_byte * shard_param_bytes(units)``;
  3. the whole-layer time scaled linearly: ``layer_time_s * units / U``.

  With ``units == U`` (the whole layer) the whole-layer time is used.
* **Weight memory** of a layer (or a dense shard): ``kind.layer_memory_bytes`` if given
  (scaled by ``units / U`` for a shard), else ``weight_memory_factor * param bytes``
  (``dense_weight_memory_factor`` for a dense layer where given). The factor covers what a
  framework holds per weight byte beyond the float32 weights themselves.
* **Baseline memory**: ``kind.baseline_bytes`` once per device (runtime + worker process).
* **Link time** for one message of ``n`` bytes: ``latency_s + n / bandwidth_Bps``; zero
  between two pieces on the same device.
* **Task overhead** (optional, default 0): ``kind.task_overhead_s`` seconds that every piece
  (one Dask task per frame) costs its device on top of its layers' compute: scheduling,
  (de)serialisation, feed assembly. Measured profiles (``mcdask.profiling.assemble``) set it.
* **Runtime** (optional, default 0): what a device's runtime (Dask's Python: its event loop,
  comms, (de)serialisation and bookkeeping) spends, in seconds: ``kind.runtime_task_s`` per
  task, ``kind.runtime_dependency_s`` per dependency of a task (one per producer shard of each
  input, ``window`` of them for a windowed input: the temporal pyramid reads 40 frames'
  exports), ``kind.runtime_receive_s`` per message it fetches from another device and
  ``kind.runtime_send_s`` per message it serves (to another device, or a result to the
  client). Frames reach a device inside its task's own message. They add to the device's busy
  time: a piece's resource slot keeps its next task on the scheduler until this one is done,
  so the next task's dispatch, its dependencies' fetches and this one's result run between the
  device's computations, not beside them. Measured by
  ``mcdask.profiling.overhead.measure_message_cost``.
* **Shared hosts** (optional): ``device.host`` names the machine a device runs on and
  ``profile.host_cores[host]`` its cores. Devices on one host share its cores: per frame, the
  host spends the summed busy time of its devices (one core each while busy: one-thread
  TensorFlow, as on a LocalCluster or an emulated farm) plus, per task, the scheduler's and
  client's CPU seconds if they run there (``profile.host_task_overhead_s[host]``, and once per
  frame ``profile.host_frame_overhead_s[host]``); divided by
  its cores this is one more resource of the cost model. Absent: devices are separate machines.
* **Measured metadata** (optional): ``kind.measured`` and ``profile.measured`` hold what the
  profiler saw (host, cores, threads, memory limits, raw link samples, ...) for people; the
  cost model does not read them.

This module imports neither TensorFlow nor Dask.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcdask.errors import ProfileError
from mcdask.model.files import count_key, listing, load, mapping, name, number, seconds, shown, whole
from mcdask.model.links import Link, LinkModel

SCHEMA = "mcdask.profile/1"
#: the pseudo-device that sends frames and receives results
CLIENT = "client"


#: a kind's runtime costs (module docstring), seconds
RUNTIME_COSTS = ("runtime_task_s", "runtime_dependency_s", "runtime_receive_s", "runtime_send_s")
#: every per-task cost of a kind beyond its layers, seconds
OVERHEADS = ("task_overhead_s", *RUNTIME_COSTS)


@dataclass(frozen=True)
class DeviceKind:
    """What one kind of device can do. Times in seconds per frame, memory in bytes."""

    kind: str
    memory_bytes: int
    baseline_bytes: int
    layer_time_s: dict[str, dict[str, float]]
    weight_memory_factor: float = 1.0
    shard_time_s: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    layer_memory_bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    dense_fixed_s: float | None = None
    dense_s_per_weight_byte: float | None = None
    resources: dict[str, float] = field(default_factory=dict)
    #: where each number comes from, for people
    sources: dict[str, str] = field(default_factory=dict)
    note: str = ""
    #: seconds each piece (one task per frame) costs beyond its layers (module docstring)
    task_overhead_s: float = 0.0
    #: what a profiler measured about this device (plain JSON data, for people)
    measured: dict[str, Any] = field(default_factory=dict)
    #: ``weight_memory_factor`` of dense layers, where a runtime loads them otherwise (None: the same)
    dense_weight_memory_factor: float | None = None
    #: the device's runtime, per task, per dependency, per message fetched and served (module docstring)
    runtime_task_s: float = 0.0
    runtime_dependency_s: float = 0.0
    runtime_receive_s: float = 0.0
    runtime_send_s: float = 0.0

    def __post_init__(self) -> None:
        for key in OVERHEADS:
            if not getattr(self, key) >= 0:
                raise ProfileError(f"kind {self.kind!r}: need {key} >= 0; got {getattr(self, key)!r}")
        if (self.memory_bytes <= 0 or self.baseline_bytes < 0 or self.weight_memory_factor <= 0
                or not (self.dense_weight_memory_factor or 1) > 0):
            raise ProfileError(f"kind {self.kind!r}: need memory_bytes > 0, baseline_bytes >= 0 and "
                               f"weight_memory_factor > 0; got {self.memory_bytes}, {self.baseline_bytes}, "
                               f"{self.weight_memory_factor}")
        if (self.dense_fixed_s is None) != (self.dense_s_per_weight_byte is None):
            raise ProfileError(f"kind {self.kind!r}: give both dense_fixed_s and dense_s_per_weight_byte or neither")

    # ---- queries --------------------------------------------------------------------------
    def _whole(self, workload: str, layer) -> float:
        try:
            return self.layer_time_s[workload][layer.name]
        except KeyError:
            have = ", ".join(sorted(self.layer_time_s)) or "none"
            raise ProfileError(f"kind {self.kind!r} has no time for {workload} layer {layer.name!r} "
                               f"(workloads profiled: {have}); profile it or pick another kind") from None

    def time_s(self, workload: str, layer, units: int | None = None) -> float:
        """Seconds for one frame of ``layer`` (a ``workloads.Layer``) of ``workload``, or of a
        dense shard of ``units`` output units (rules in the module docstring)."""
        if units is None or units == layer.units:
            return self._whole(workload, layer)
        if layer.kind != "dense" or not 0 < units < layer.units:
            raise ProfileError(f"{layer.name!r}: cannot time a shard of {units} units "
                               f"(a {layer.kind} layer with {layer.units} units)")
        measured = self.shard_time_s.get(workload, {}).get(layer.name, {})
        if units in measured:
            return measured[units]
        if self.dense_fixed_s is not None:
            return self.dense_fixed_s + self.dense_s_per_weight_byte * layer.shard_param_bytes(units)
        return self._whole(workload, layer) * units / layer.units

    def weight_memory_bytes(self, workload: str, layer, units: int | None = None) -> int:
        """Bytes the weights of ``layer`` (or of a shard of ``units`` units) take on this kind."""
        fraction = 1.0 if units is None else units / layer.units
        given = self.layer_memory_bytes.get(workload, {}).get(layer.name)
        if given is not None:
            return round(given * fraction)
        raw = layer.param_bytes if units is None else layer.shard_param_bytes(units)
        dense = layer.kind == "dense" and self.dense_weight_memory_factor is not None
        return round((self.dense_weight_memory_factor if dense else self.weight_memory_factor) * raw)

    def covers(self, workload) -> list[str]:
        """Names of ``workload``'s layers this kind has no time for (empty: all covered)."""
        times = self.layer_time_s.get(workload.name, {})
        return [l.name for l in workload.layers if l.name not in times]

    # ---- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "kind": self.kind, "memory_bytes": self.memory_bytes, "baseline_bytes": self.baseline_bytes,
            "weight_memory_factor": self.weight_memory_factor,
        }
        if self.dense_weight_memory_factor is not None:
            d["dense_weight_memory_factor"] = self.dense_weight_memory_factor
        if self.dense_fixed_s is not None:
            d["dense_fixed_s"] = self.dense_fixed_s
            d["dense_s_per_weight_byte"] = self.dense_s_per_weight_byte
        d["layer_time_s"] = {w: dict(t) for w, t in self.layer_time_s.items()}
        if self.shard_time_s:
            d["shard_time_s"] = {w: {l: {str(u): s for u, s in sorted(m.items())} for l, m in t.items()}
                                 for w, t in self.shard_time_s.items()}
        if self.layer_memory_bytes:
            d["layer_memory_bytes"] = {w: dict(t) for w, t in self.layer_memory_bytes.items()}
        for key in OVERHEADS:
            if getattr(self, key):
                d[key] = getattr(self, key)
        d.update({key: value if isinstance(value, str) else dict(value)
                  for key in ("resources", "sources", "note", "measured") if (value := getattr(self, key))})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DeviceKind:
        if not isinstance(d, dict):
            raise ProfileError(f"a device kind must be a JSON object, got {shown(d)}")
        k = d.get("kind", "?")

        def per_workload(key: str, required: bool = False) -> dict[str, dict]:
            table = mapping(d[key] if required else d.get(key, {}), f"kind {k}: {key}")
            return {w: mapping(t, f"kind {k}: {key} of {w}") for w, t in table.items()}

        def optional(key: str, default=None):
            return None if d.get(key, default) is None else seconds(d[key], f"kind {k}: {key}")

        try:
            return cls(
                kind=name(k, "a kind's name"), memory_bytes=whole(d["memory_bytes"], f"kind {k}: memory_bytes", 1),
                baseline_bytes=whole(d["baseline_bytes"], f"kind {k}: baseline_bytes"),
                layer_time_s={w: {l: seconds(s, f"kind {k}: {w} layer {l} time") for l, s in t.items()}
                              for w, t in per_workload("layer_time_s", required=True).items()},
                weight_memory_factor=seconds(d.get("weight_memory_factor", 1.0), f"kind {k}: weight_memory_factor"),
                shard_time_s={w: {l: {count_key(u, f"kind {k}: {w} {l} shard units"):
                                      seconds(s, f"kind {k}: {w} {l}[{u} units] time")
                                      for u, s in mapping(m, f"kind {k}: {w} {l} shard times").items()}
                                  for l, m in t.items()}
                              for w, t in per_workload("shard_time_s").items()},
                layer_memory_bytes={w: {l: whole(b, f"kind {k}: {w} layer {l} memory") for l, b in t.items()}
                                    for w, t in per_workload("layer_memory_bytes").items()},
                dense_fixed_s=optional("dense_fixed_s"), dense_s_per_weight_byte=optional("dense_s_per_weight_byte"),
                dense_weight_memory_factor=optional("dense_weight_memory_factor"),
                resources={r: number(v, f"kind {k}: resource {r}", maximum=float("inf"))
                           for r, v in mapping(d.get("resources", {}), f"kind {k}: resources").items()},
                sources=dict(mapping(d.get("sources", {}), f"kind {k}: sources")), note=str(d.get("note", "")),
                **{key: seconds(d.get(key, 0.0), f"kind {k}: {key}")
                   for key in OVERHEADS},
                measured=dict(mapping(d.get("measured", {}), f"kind {k}: measured")))
        except KeyError as e:
            raise ProfileError(f"malformed device kind {shown(k)}: missing key {e}; a kind has "
                               "kind, memory_bytes, baseline_bytes, layer_time_s") from None
        except (TypeError, ValueError) as e:
            raise ProfileError(f"malformed device kind {shown(k)}: {e}") from None


@dataclass(frozen=True)
class Device:
    name: str
    kind: str
    #: the machine it runs on (module docstring); "" = a machine of its own
    host: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, **({"host": self.host} if self.host else {})}

    @classmethod
    def from_dict(cls, d: dict) -> Device:
        host = mapping(d, "a device").get("host", "")
        return cls(name(d["name"], "a device's name"), name(d["kind"], "a device's kind"),
                   "" if host == "" else name(host, "a device's host"))


@dataclass(frozen=True)
class Profile:
    """Devices, their kinds and the links between them (plus the client)."""

    kinds: dict[str, DeviceKind]
    devices: tuple[Device, ...]
    default_link: LinkModel
    links: tuple[Link, ...] = ()
    name: str = ""
    note: str = ""
    #: what a profiler measured about the cluster (plain JSON data, for people)
    measured: dict[str, Any] = field(default_factory=dict)
    #: cores of each shared host (module docstring)
    host_cores: dict[str, float] = field(default_factory=dict)
    #: scheduler + client CPU seconds per task spent on a host
    host_task_overhead_s: dict[str, float] = field(default_factory=dict)
    #: scheduler + client CPU seconds per frame (beyond its tasks) spent on a host
    host_frame_overhead_s: dict[str, float] = field(default_factory=dict)

    _by_name: dict[str, DeviceKind] = field(init=False, repr=False, compare=False)
    _links: dict[frozenset, LinkModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bad = {h: c for h, c in self.host_cores.items() if not c > 0}
        bad.update({h: s for h, s in self.host_task_overhead_s.items() if not s >= 0})
        bad.update({h: s for h, s in self.host_frame_overhead_s.items() if not s >= 0})
        if bad:
            raise ProfileError(f"host_cores must be > 0 and host_task_overhead_s >= 0; got {bad}")
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ProfileError(f"device names repeat: {names}")
        if CLIENT in names:
            raise ProfileError(f"{CLIENT!r} is reserved for the frame source; rename that device")
        unknown = sorted({d.kind for d in self.devices} - set(self.kinds))
        if unknown:
            raise ProfileError(f"devices use kinds {unknown} that the profile does not define "
                               f"(defined: {sorted(self.kinds)})")
        for k, v in self.kinds.items():
            if k != v.kind:
                raise ProfileError(f"kind listed as {k!r} calls itself {v.kind!r}")
        known = set(names) | {CLIENT}
        for l in self.links:
            if l.a not in known or l.b not in known or l.a == l.b:
                raise ProfileError(f"link {l.a!r}-{l.b!r}: endpoints must be two different devices of the "
                                   f"profile or {CLIENT!r}")
        object.__setattr__(self, "_by_name", {d.name: self.kinds[d.kind] for d in self.devices})
        object.__setattr__(self, "_links", {frozenset((l.a, l.b)): l.model for l in self.links})

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    def kind_of(self, device: str) -> DeviceKind:
        try:
            return self._by_name[device]
        except KeyError:
            raise ProfileError(f"device {device!r} is not in profile {self.name!r} "
                               f"(devices: {', '.join(self.device_names)})") from None

    def link(self, a: str, b: str) -> LinkModel:
        return self._links.get(frozenset((a, b)), self.default_link)

    def transfer_s(self, a: str, b: str, nbytes: float) -> float:
        """Seconds to move one message of ``nbytes`` from ``a`` to ``b`` (0 on one device)."""
        return 0.0 if a == b else self.link(a, b).time_s(nbytes)

    def subset(self, names: Iterable[str]) -> Profile:
        """The same profile restricted to ``names`` (in that order)."""
        names = list(names)
        for n in names:
            self.kind_of(n)
        keep = set(names)
        hosts = {d.name: d.host for d in self.devices}
        devs = tuple(Device(n, self._by_name[n].kind, hosts[n]) for n in names)
        kinds = {k: v for k, v in self.kinds.items() if any(d.kind == k for d in devs)}
        links = tuple(l for l in self.links if {l.a, l.b} <= keep | {CLIENT})
        return Profile(kinds, devs, self.default_link, links, self.name, self.note, self.measured,
                       dict(self.host_cores), dict(self.host_task_overhead_s), dict(self.host_frame_overhead_s))

    # ---- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict[str, Any] = {"schema": SCHEMA, "name": self.name}
        if self.note:
            d["note"] = self.note
        d["default_link"] = self.default_link.to_dict()
        d["links"] = [l.to_dict() for l in self.links]
        d["devices"] = [x.to_dict() for x in self.devices]
        d["kinds"] = {k: v.to_dict() for k, v in sorted(self.kinds.items())}
        if self.host_cores:
            d["host_cores"] = dict(self.host_cores)
        if self.host_task_overhead_s:
            d["host_task_overhead_s"] = dict(self.host_task_overhead_s)
        if self.host_frame_overhead_s:
            d["host_frame_overhead_s"] = dict(self.host_frame_overhead_s)
        if self.measured:
            d["measured"] = dict(self.measured)
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        if not isinstance(d, dict):
            raise ProfileError(f"a profile is a JSON object, got a {type(d).__name__}")
        if d.get("schema") != SCHEMA:
            raise ProfileError(f"not a profile of schema {SCHEMA!r}: got schema {d.get('schema')!r}")
        try:
            per_host = lambda key: {h: seconds(v, f"{key} of {h}") for h, v in mapping(d.get(key, {}), key).items()}
            kinds = {k: DeviceKind.from_dict(v) for k, v in mapping(d["kinds"], "kinds").items()}
            devices = tuple(Device.from_dict(x) for x in listing(d["devices"], "devices"))
            return cls(kinds, devices, LinkModel.from_dict(d["default_link"]),
                       tuple(Link.from_dict(l) for l in listing(d.get("links", []), "links")), str(d.get("name", "")),
                       str(d.get("note", "")), dict(mapping(d.get("measured", {}), "measured")),
                       per_host("host_cores"), per_host("host_task_overhead_s"), per_host("host_frame_overhead_s"))
        except KeyError as e:
            raise ProfileError(f"malformed profile: missing key {e}; a profile has schema, default_link, devices, "
                               "kinds; a device has name and kind") from None
        except (TypeError, ValueError) as e:
            raise ProfileError(f"malformed profile: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        return load(path, "profile", ProfileError, cls.from_dict)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")
