"""Run a plan in this process: the reference ("unsplit model") and fast equivalence checks.

``LocalRunner`` builds every piece of a plan here and runs each submit at once, with the same
slices, merges and window assembly the workers use; only Dask is absent. Each device of the plan
holds its own copy of the pieces ``Plan.tasks_of`` gives it (what the worker plugin builds), and
the replicas of a piece take frames in turn, so every replica's copy answers some frames. With
the single-device plan it is the whole model on one machine: ``mcdask.streaming.reference``.
With ``backend="litert"`` each piece is the flatbuffer a litert device would load
(``mcdask.runtime.convert``), run by LiteRT here.
"""

from __future__ import annotations

from concurrent.futures import Future

import workloads
from mcdask.model.plan import Plan
from mcdask.runtime.pieces import SliceShape
from mcdask.runtime.slices import Slice, SliceSpec, assemble
from mcdask.runtime.weights import WeightsSource

#: "device/slice key" -> Slice: built pieces, kept across runners of one plan (tests clear it)
_CACHE: dict[str, SliceShape] = {}


def _resolve(value):
    if isinstance(value, Future):
        return value.result()
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    return value


class LocalRunner:
    def __init__(self, plan: Plan, weights: WeightsSource = WeightsSource(), cache: bool = True,
                 backend: str = "tensorflow", kernels: str = "xnnpack"):
        self.plan = plan
        self.workload = workloads.get(plan.workload)
        #: (stage, shard) -> one built copy per device that holds it, in the plan's device order
        self.copies: dict[tuple[int, int], list[SliceShape]] = {}
        for device in plan.devices:
            for si, hi in plan.tasks_of(device):
                st = plan.stages[si]
                spec = SliceSpec(plan.workload, st.start, st.end, st.shards[hi].units, weights,
                                 backend, kernels)  # type: ignore[arg-type]
                key = f"{device}/{spec.key}"
                s = _CACHE.get(key) if cache else None
                if s is None:
                    s = _build(spec)
                    if cache:
                        _CACHE[key] = s
                self.copies.setdefault((si, hi), []).append(s)

    def submit(self, stage: int, shard: int, frame: int, feeds: dict) -> Future:
        """Run the piece now, on the replica whose turn frame ``frame`` is."""
        fut: Future = Future()
        copies = self.copies[stage, shard]
        s = copies[frame % len(copies)]
        try:
            fut.set_result(s(assemble(self.workload, {k: _resolve(v) for k, v in feeds.items()}, s.stacked,
                                      s.preprocess)))
        except Exception as e:
            fut.set_exception(e)
        return fut

    def gather(self, futures: list) -> list:
        return [f.result() for f in futures]

    def cancel(self, futures: list) -> None:
        """Nothing runs in the background here."""

    def why_stalled(self) -> str | None:
        """Nothing stalls here: every piece runs when submitted."""
        return None


def _build(spec: SliceSpec) -> SliceShape:
    if spec.backend == "litert":
        from mcdask.runtime.convert import flatbuffer_path
        from mcdask.runtime.litert import load

        return load(spec, flatbuffer_path)
    return Slice(spec)
