"""Run a plan in this process: the reference ("unsplit model") and fast equivalence checks.

``LocalRunner`` builds every piece of a plan here and runs each submit at once, with the same
slices, merges and window assembly the workers use; only Dask is absent. With the
single-device plan it is the whole model on one machine: ``mcdask.streaming.reference``.
"""

from __future__ import annotations

from concurrent.futures import Future

import workloads
from mcdask.model.plan import Plan
from mcdask.runtime.slices import Slice, SliceSpec, assemble
from mcdask.runtime.weights import WeightsSource

_CACHE: dict[str, Slice] = {}


def _resolve(value):
    if isinstance(value, Future):
        return value.result()
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    return value


class LocalRunner:
    def __init__(self, plan: Plan, weights: WeightsSource = WeightsSource(), cache: bool = True):
        self.plan = plan
        self.workload = workloads.get(plan.workload)
        self.pieces = {}
        for si, st in enumerate(plan.stages):
            for hi, sh in enumerate(st.shards):
                spec = SliceSpec(plan.workload, st.start, st.end, sh.units, weights)
                s = _CACHE.get(spec.key) if cache else None
                if s is None:
                    s = Slice(spec)
                    if cache:
                        _CACHE[spec.key] = s
                self.pieces[si, hi] = s

    def submit(self, stage: int, shard: int, frame: int, feeds: dict) -> Future:
        fut: Future = Future()
        s = self.pieces[stage, shard]
        try:
            fut.set_result(s(assemble(self.workload, {k: _resolve(v) for k, v in feeds.items()}, s.stacked)))
        except Exception as e:
            fut.set_exception(e)
        return fut

    def gather(self, futures: list) -> list:
        return [f.result() for f in futures]

    def cancel(self, futures: list) -> None:
        """Nothing runs in the background here."""
