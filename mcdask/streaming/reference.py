"""The unsplit model, for checking a split one: frames streamed through a plan in this process
(``run_local``), and through the single-device plan (``reference_outputs``)."""

from __future__ import annotations

import workloads
from mcdask.model.plan import Plan, single_device
from mcdask.runtime.local import LocalRunner
from mcdask.runtime.weights import WeightsSource
from mcdask.streaming.records import Item
from mcdask.streaming.stream import Stream


def run_local(plan: Plan, items: list[Item], weights: WeightsSource = WeightsSource()):
    """Records of streaming ``items`` through ``plan`` in this process."""
    runner = LocalRunner(plan, weights)
    return list(Stream(runner, plan, runner.workload, depth=1).run(items))


def reference_outputs(workload: str, items: list[Item], weights: WeightsSource = WeightsSource()) -> dict:
    """frame -> output of the unsplit model (one device, no shards, no replicas)."""
    w = workloads.get(workload)
    return {r.frame: r.output for r in run_local(single_device(w), items, weights) if r.status == "ok"}
