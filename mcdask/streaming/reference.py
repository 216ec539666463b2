"""The unsplit model, for checking a split one: frames streamed through a plan in this process
(``run_local``), and through the single-device plan (``reference_outputs``)."""

from __future__ import annotations

import workloads
from mcdask.model.plan import Plan, single_device
from mcdask.runtime.local import LocalRunner
from mcdask.runtime.slices import prepare_input
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


def against_keras(model, items: list[Item], records) -> dict:
    """Compare every classified frame with the user's own Keras ``model`` (its ``predict`` on
    the frames scaled to [0, 1], as the devices read them)."""
    import numpy as np

    frames = {it.frame: it.inputs["frame"] for it in items if it.inputs is not None}
    ok = [r for r in records if r.status == "ok" and r.frame in frames]
    if not ok:
        return {"checked": 0, "max_abs_diff": None, "output_scale": 0.0, "equal": False}
    x = prepare_input(np.concatenate([frames[r.frame] for r in ok]))   # as the devices read frames
    want = np.asarray(model.predict(x, verbose=0))
    got = np.concatenate([np.asarray(r.output).reshape(1, -1) for r in ok])
    diff, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    return {"checked": len(ok), "max_abs_diff": diff, "output_scale": scale, "equal": diff <= 1e-5 * max(scale, 1e-12)}
