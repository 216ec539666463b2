"""A plan: which devices run which layers. Plain, versioned data that the runtime reads.

A plan is a list of stages. A stage runs the layers ``[start, end)`` of a workload (half-open,
zero-based, as everywhere in mcdask). A stage has one or more shards:

* one shard with ``units=None`` runs the whole stage; its ``devices`` are replicas (data
  parallelism: whichever replica is free takes the next frame);
* k shards split the stage's last layer, a dense layer, by output units ``[a, b)`` (model
  parallelism). Every shard runs the layers before it whole; the consumer concatenates the
  shards in order (and applies a softmax there, since softmax needs every unit).

Stages run in order; a stage reads what earlier stages export. A windowed layer (the temporal
pyramid) must start a stage, since its window spans other frames' tasks.

The planner writes plans; the runtime never re-decides one. This module imports neither
TensorFlow nor Dask.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcdask.errors import PlanError
from mcdask.model.files import listing, load, mapping, name, shown, whole

SCHEMA = "mcdask.plan/1"


@dataclass(frozen=True)
class Shard:
    """Output units ``[a, b)`` of the stage's last layer (None: the whole stage) and the
    devices that hold this piece (more than one: data-parallel replicas)."""

    units: tuple[int, int] | None
    devices: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"units": list(self.units) if self.units else None, "devices": list(self.devices)}

    @classmethod
    def from_dict(cls, d: dict) -> Shard:
        u = mapping(d, "a shard").get("units")
        if u is not None and (not isinstance(u, (list, tuple)) or len(u) != 2):
            raise ValueError(f"shard units must be [a, b] or null, got {shown(u)}")
        units = (whole(u[0], "a shard's first unit"), whole(u[1], "a shard's end unit")) if u is not None else None
        devices = listing(d["devices"], "a shard's devices")
        return cls(units, tuple(name(x, "a device name") for x in devices))


@dataclass(frozen=True)
class Stage:
    start: int
    end: int
    shards: tuple[Shard, ...]

    @property
    def split(self) -> bool:
        return len(self.shards) > 1

    def to_dict(self) -> dict:
        return {"layers": [self.start, self.end], "shards": [s.to_dict() for s in self.shards]}

    @classmethod
    def from_dict(cls, d: dict) -> Stage:
        layers = listing(mapping(d, "a stage")["layers"], "a stage's layers")
        if len(layers) != 2:
            raise ValueError(f"a stage's layers must be [start, end], got {shown(layers)}")
        return cls(whole(layers[0], "a stage's first layer"), whole(layers[1], "a stage's end layer"),
                   tuple(Shard.from_dict(s) for s in listing(d["shards"], "a stage's shards")))


@dataclass(frozen=True)
class Plan:
    workload: str
    devices: tuple[str, ...]
    stages: tuple[Stage, ...]
    strategy: str = "manual"
    #: what the planner predicted (ips, latency_s, memory_bytes per device, ...): informative only
    predicted: dict[str, Any] = field(default_factory=dict, compare=False)
    note: str = field(default="", compare=False)

    # ---- identity and serialisation -------------------------------------------------------
    @property
    def id(self) -> str:
        """Short digest of what the runtime acts on (workload, devices, stages)."""
        core = {"workload": self.workload, "devices": list(self.devices),
                "stages": [s.to_dict() for s in self.stages]}
        return hashlib.sha1(json.dumps(core, sort_keys=True).encode()).hexdigest()[:8]

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"schema": SCHEMA, "workload": self.workload, "devices": list(self.devices),
             "strategy": self.strategy, "stages": [s.to_dict() for s in self.stages]}
        if self.predicted:
            d["predicted"] = self.predicted
        if self.note:
            d["note"] = self.note
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        if not isinstance(d, dict):
            raise PlanError(f"a plan is a JSON object, got a {type(d).__name__}")
        if d.get("schema") != SCHEMA:
            raise PlanError(f"not a plan of schema {SCHEMA!r}: got schema {shown(d.get('schema'))}")
        try:
            return cls(name(d["workload"], "workload"),
                       tuple(name(x, "a device name") for x in listing(d["devices"], "the plan's devices")),
                       tuple(Stage.from_dict(s) for s in listing(d["stages"], "the plan's stages")),
                       name(d.get("strategy", "manual"), "strategy"),
                       dict(mapping(d.get("predicted", {}), "predicted")), str(d.get("note", "")))
        except KeyError as e:
            raise PlanError(f"malformed plan: missing key {e}; a plan has workload, devices, stages, a stage has "
                            "layers and shards, a shard has units and devices") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise PlanError(f"malformed plan: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return load(path, "plan", PlanError, cls.from_dict)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    # ---- queries ----------------------------------------------------------------------------
    def tasks_of(self, device: str) -> list[tuple[int, int]]:
        """(stage index, shard index) pairs the device holds."""
        return [(si, hi) for si, st in enumerate(self.stages)
                for hi, sh in enumerate(st.shards) if device in sh.devices]

    def renamed(self, mapping: dict[str, str]) -> Plan:
        """The same plan on other device names (``mapping`` old -> new)."""
        stages = tuple(Stage(s.start, s.end, tuple(Shard(h.units, tuple(mapping[d] for d in h.devices))
                                                   for h in s.shards)) for s in self.stages)
        return Plan(self.workload, tuple(mapping[d] for d in self.devices), stages, self.strategy,
                    self.predicted, self.note)

    # ---- invariants --------------------------------------------------------------------------
    def validate(self, workload) -> Plan:
        """Check this plan against ``workload`` (a ``workloads.Workload``); returns self."""
        if workload.name != self.workload:
            raise PlanError(f"plan is for workload {self.workload!r}, not {workload.name!r}")
        n = len(workload.layers)
        if not self.stages:
            raise PlanError("plan has no stages")
        if len(set(self.devices)) != len(self.devices):
            raise PlanError(f"device names repeat: {list(self.devices)}")
        pos = 0
        for si, st in enumerate(self.stages):
            where = f"stage {si} (layers [{st.start}, {st.end}))"
            if st.start != pos or st.end <= st.start:
                raise PlanError(f"{where}: stages must be contiguous and non-empty; expected start {pos}")
            if st.end > n:
                raise PlanError(f"{where}: workload {workload.name!r} has only {n} layers")
            for i in range(st.start + 1, st.end):
                if workload.cut_required(i):
                    raise PlanError(f"{where}: windowed layer {workload.layers[i].name!r} must start a stage")
            if not st.shards:
                raise PlanError(f"{where}: no shards")
            for sh in st.shards:
                if not sh.devices:
                    raise PlanError(f"{where}: a shard has no device")
                unknown = [d for d in sh.devices if d not in self.devices]
                if unknown:
                    raise PlanError(f"{where}: devices {unknown} are not in the plan's devices")
                if len(set(sh.devices)) != len(sh.devices):
                    raise PlanError(f"{where}: a shard lists a device twice: {list(sh.devices)}")
            if st.split:
                last = workload.layers[st.end - 1]
                if not last.splittable:
                    raise PlanError(f"{where}: split into {len(st.shards)} shards but its last layer "
                                    f"{last.name!r} is a {last.kind} layer; only dense layers split")
                if workload.stage_outputs(st.start, st.end) != [last.name]:
                    raise PlanError(f"{where}: a split stage may export only its split layer")
                expect = 0
                for sh in st.shards:
                    if sh.units is None or sh.units[0] != expect or sh.units[1] <= sh.units[0]:
                        raise PlanError(f"{where}: shard units {[s.units for s in st.shards]} must tile "
                                        f"[0, {last.units}) in order")
                    expect = sh.units[1]
                if expect != last.units:
                    raise PlanError(f"{where}: shard units end at {expect}, layer {last.name!r} has {last.units}")
            elif st.shards[0].units is not None:
                raise PlanError(f"{where}: a single shard must have units null (the whole stage)")
            pos = st.end
        if pos != n:
            raise PlanError(f"stages cover layers [0, {pos}) of {n}")
        used = {d for st in self.stages for sh in st.shards for d in sh.devices}
        idle = [d for d in self.devices if d not in used]
        if idle:
            raise PlanError(f"devices {idle} hold no task; drop them from the plan")
        return self

    def describe(self, workload) -> list[str]:
        """One line per stage for people: layers, split and devices."""
        lines = []
        for si, st in enumerate(self.stages):
            names = workload.layers[st.start].name
            if st.end - st.start > 1:
                names += ".." + workload.layers[st.end - 1].name
            for sh in st.shards:
                part = f"[{sh.units[0]}:{sh.units[1]}]" if sh.units else ""
                lines.append(f"stage {si} {names}{part}: {', '.join(sh.devices)}")
        return lines


def stage_label(workload, stage: Stage, shard: int | None = None) -> str:
    """Readable task-key prefix: ``conv1..pool5`` or ``fc1[0:2048]``."""
    label = workload.layers[stage.start].name
    if stage.end - stage.start > 1:
        label += ".." + workload.layers[stage.end - 1].name
    units = stage.shards[shard].units if shard is not None and stage.split else None
    if units is not None:
        a, b = units
        label += f"[{a}:{b}]"
    return label


def single_device(workload, device: str = "d0") -> Plan:
    """Everything on one device (one stage per windowed segment)."""
    cuts = [0] + [i for i in range(1, len(workload.layers)) if workload.cut_required(i)] + [len(workload.layers)]
    stages = tuple(Stage(a, b, (Shard(None, (device,)),)) for a, b in zip(cuts, cuts[1:]))
    return Plan(workload.name, (device,), stages, "single")
