"""The batch dimension of the cost model: what a plan does when each task carries K frames
(batch mode, ``mcdask batch``), and the K that ``--batch-size auto`` picks. Pure arithmetic.

The model, on top of ``mcdask.planning.costmodel`` (whose rules hold per batch):

* **Piece time** of K frames: each layer costs ``t1 * (f + (1 - f) * K)``, where ``t1`` is its
  profiled time for one frame and ``f`` the fixed fraction of its layer kind: the part paid once
  per task whatever K is (a dense layer reads all its weights once per task, so its ``f`` is
  near 1; a convolution's work grows with K, so its ``f`` is near 0). Plus ``task_overhead_s``
  once per task. ``fit_fixed_fraction`` reads ``f`` from a time at 1 and at K frames;
  ``mcdask.batch.fixed-fraction`` holds them per layer kind (defaults measured on an x86 core,
  one TensorFlow thread; ``bench/batching.py`` measures them again).
* **Messages** carry K frames: ``latency_s + K x bytes / bandwidth_Bps`` per task; the
  device's runtime costs (per task, dependency and message) are paid once per task.
* **Memory**: weights once, activation buffers K times, checked against each device's kind.

Per frame, every resource is busy ``1 / K`` of its per-task time, so ``Cost.ips`` is frames per
second and ``Cost.latency_s`` one frame's share; a batch's latency is K times that.

This module imports neither TensorFlow nor Dask's distributed.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.config

from mcdask.errors import PlanError
from mcdask.model.plan import Plan
from mcdask.model.profile import Profile
from mcdask.planning.costmodel import Cost, Memo, evaluate
from mcdask.planning.pieces import piece_memory_bytes

#: a batch size ``auto`` does not go beyond unless ``mcdask.batch.max-size`` says otherwise
MAX_BATCH = 32


def fixed_fractions() -> dict[str, float]:
    """Layer kind -> fixed fraction ``f`` (``mcdask.batch.fixed-fraction``)."""
    return {str(k): float(v) for k, v in dask.config.get("mcdask.batch.fixed-fraction").items()}


def fit_fixed_fraction(t1_s: float, tk_s: float, k: int) -> float:
    """The fixed fraction ``f`` that makes ``t1 * (f + (1 - f) * k) == tk``, within [0, 1]."""
    if k < 2 or t1_s <= 0:
        raise ValueError(f"need k >= 2 and a positive time for one frame; got k={k}, t1={t1_s}")
    return min(1.0, max(0.0, (k - tk_s / t1_s) / (k - 1)))


class BatchMemo(Memo):
    """Per-piece facts with ``k`` frames per task, as per-frame shares (module docstring)."""

    def __init__(self, workload, profile: Profile, k: int, fractions: dict[str, float] | None = None):
        super().__init__(workload, profile)
        if k < 1:
            raise PlanError(f"a batch holds at least 1 frame; got {k}")
        self.k = k
        self.tasks_per_frame = 1 / k
        self.fractions = fractions if fractions is not None else fixed_fractions()

    def time(self, device: str, start: int, end: int, units) -> float:
        kind = self.p.kind_of(device)
        key = (kind.kind, start, end, units)
        if key not in self._time:
            t = kind.task_overhead_s
            for i in range(start, end):
                layer = self.w.layers[i]
                u = units[1] - units[0] if (units is not None and i == end - 1) else None
                f = self.fractions.get(layer.kind, 0.0)
                t += kind.time_s(self.w.name, layer, u) * (f + (1 - f) * self.k)
            self._time[key] = t / self.k
        return self._time[key]

    def memory(self, device: str, start: int, end: int, units) -> int:
        kind = self.p.kind_of(device)
        key = (kind.kind, start, end, units)
        if key not in self._mem:
            weights = 0
            for i in range(start, end):
                u = units if (units is not None and i == end - 1) else None
                weights += kind.weight_memory_bytes(self.w.name, self.w.layers[i], None if u is None else u[1] - u[0])
            activations = piece_memory_bytes(self.w, kind, start, end, units) - weights
            self._mem[key] = weights + self.k * activations
        return self._mem[key]

    def transfer(self, a: str, b: str, nbytes: int) -> float:
        key = (a, b, nbytes)
        if key not in self._link:
            self._link[key] = self.p.transfer_s(a, b, self.k * nbytes) / self.k
        return self._link[key]


def batch_cost(workload, plan: Plan, profile: Profile, k: int, fractions: dict[str, float] | None = None) -> Cost:
    """``plan`` predicted with ``k`` frames per task (per-frame figures; ``fits`` checks memory)."""
    return evaluate(workload, plan, profile, BatchMemo(workload, profile, k, fractions))


@dataclass(frozen=True)
class BatchChoice:
    """The batch size chosen, and the prediction behind it for every size tried."""

    k: int
    ips: dict[int, float]                  # frames per second, for each size that fits
    too_big: dict[int, str]                # sizes that do not fit: the first device over its memory

    def to_dict(self) -> dict:
        return {"batch_size": self.k, "predicted_ips": {str(k): round(v, 3) for k, v in self.ips.items()},
                "over_memory": {str(k): why for k, why in self.too_big.items()}}


def choose_batch_size(workload, plan: Plan, profile: Profile, max_k: int | None = None,
                      fractions: dict[str, float] | None = None, within: float = 0.05) -> BatchChoice:
    """The batch size for ``plan``: among 1..``max_k`` (``mcdask.batch.max-size``) the sizes
    whose activations fit every device, the smallest whose predicted throughput is within
    ``within`` of the best (a bigger batch buys almost nothing then, and costs latency and the
    work a killed job redoes). Raises PlanError when not even one frame fits."""
    max_k = max_k or int(dask.config.get("mcdask.batch.max-size", MAX_BATCH))
    ips: dict[int, float] = {}
    too_big: dict[int, str] = {}
    for k in range(1, max_k + 1):
        cost = batch_cost(workload, plan, profile, k, fractions)
        if cost.fits:
            ips[k] = cost.ips
        else:
            device, (need, have) = sorted(cost.over_memory.items())[0]
            too_big[k] = f"{device} needs {need / 1e6:.0f} MB of {have / 1e6:.0f} MB"
            break   # activations grow with k: no bigger batch fits either
    if not ips:
        raise PlanError(f"plan {plan.id} does not fit its devices even one frame per task: {too_big[1]}")
    best = max(ips.values())
    return BatchChoice(min(k for k, v in ips.items() if v >= (1 - within) * best), ips, too_big)


def batch_size_for(workload, plan: Plan, profile: Profile, asked: int | None = None) -> BatchChoice:
    """``asked`` frames per task, checked against every device's memory (PlanError naming the
    device when they do not fit), or with None the cost model's choice (``choose_batch_size``)."""
    if asked is None:
        return choose_batch_size(workload, plan, profile)
    cost = batch_cost(workload, plan, profile, asked)
    if not cost.fits:
        device, (need, have) = sorted(cost.over_memory.items())[0]
        raise PlanError(f"batch size {asked}: {device} would need {need / 1e6:.0f} MB of its {have / 1e6:.0f} MB; "
                        "try a smaller batch, or auto")
    return BatchChoice(asked, {asked: cost.ips}, {})
