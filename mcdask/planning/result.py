"""What planning gives back: a plan with the cost model's prediction, or the reason none fits
(naming the layer and the bytes it needs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcdask.model.plan import Plan
from mcdask.model.profile import Profile
from mcdask.planning.costmodel import Cost
from mcdask.planning.pieces import piece_memory_bytes, shard_units
from mcdask.planning.search import segments


@dataclass(frozen=True)
class PlanResult:
    """The plan for ``devices`` devices, or why there is none."""

    devices: int
    plan: Plan | None
    cost: Cost | None = None
    reason: str = ""

    @property
    def feasible(self) -> bool:
        return self.plan is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"devices": self.devices, "feasible": self.feasible, "reason": self.reason or None}
        if self.plan is None:
            d.update(predicted_ips=None, predicted_latency_s=None, bottleneck=None, assignment=[], plan=None)
            return d
        c = self.cost
        assert c is not None, "a feasible result carries its cost"
        d.update(predicted_ips=c.ips, predicted_latency_s=c.latency_s, bottleneck=c.bottleneck,
                 assignment=[{"device": dev, "tasks": c.tasks.get(dev, []), "memory_bytes": c.memory_bytes[dev],
                              "memory_limit_bytes": c.memory_limit_bytes[dev]} for dev in self.plan.devices],
                 plan=self.plan.to_dict())
        return d


def with_prediction(p: Plan, cost: Cost) -> Plan:
    return Plan(p.workload, p.devices, p.stages, p.strategy, cost.predicted(), p.note)


def min_shards(workload, kind, index: int, limit: int) -> int | None:
    """Fewest shards (<= limit) in which dense layer ``index`` alone fits ``kind``; None if none."""
    layer = workload.layers[index]
    for k in range(2, min(limit, layer.units) + 1):
        if all(kind.baseline_bytes + piece_memory_bytes(workload, kind, index, index + 1, u) <= kind.memory_bytes
               for u in shard_units(layer.units, k)):
            return k
    return None


def infeasible_reason(workload, profile: Profile, n: int) -> str:
    """Why no plan for ``n`` devices fits: names the layer and the bytes it needs."""
    biggest = max(profile.devices[:max(n, 1)], key=lambda d: profile.kinds[d.kind].memory_bytes)
    kind = profile.kinds[biggest.kind]
    worst = None
    for i, layer in enumerate(workload.layers):
        need = kind.baseline_bytes + piece_memory_bytes(workload, kind, i, i + 1)
        if worst is None or need > worst[1]:
            worst = (i, need)
        if need <= kind.memory_bytes:
            continue
        what = (f"{workload.name} layer {layer.name!r} needs {need:,} bytes on one device "
                f"({layer.param_bytes:,} weight bytes x {kind.weight_memory_factor:.3g} + activation buffers + "
                f"baseline {kind.baseline_bytes:,}); the largest device, {biggest.name} ({kind.kind}), has "
                f"{kind.memory_bytes:,}")
        if not layer.splittable:
            return what + "; only dense layers can be split, so no number of devices helps"
        k = min_shards(workload, kind, i, layer.units)
        if k is None:
            return what + "; it does not fit one device even split into single units"
        if n < k:
            return what + f"; split into {k} shards it fits, which needs at least {k} devices (got {n})"
        if k > len(profile.devices):
            return what + f"; it needs at least {k} shards but the profile has {len(profile.devices)} devices"
    assert worst is not None, "a workload has layers"
    i, need = worst
    if n == 1:
        total = kind.baseline_bytes + sum(piece_memory_bytes(workload, kind, a, b)
                                          for a, b in segments(workload, 0, len(workload.layers)))
        big = sorted(workload.layers, key=lambda l: -l.param_bytes)[:2]
        return (f"all of {workload.name} on one device needs {total:,} bytes (largest layers: "
                + ", ".join(f"{l.name!r} {l.param_bytes:,} weight bytes" for l in big)
                + f"; baseline {kind.baseline_bytes:,}); {biggest.name} ({kind.kind}) has {kind.memory_bytes:,}")
    return (f"no assignment of {workload.name} onto exactly {n} device(s) fits in memory within the search "
            f"space; the largest single layer, {workload.layers[i].name!r}, needs {need:,} bytes with baseline "
            f"(device memory {kind.memory_bytes:,})")
