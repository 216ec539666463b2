"""The ``paper`` strategy: the paper's greedy Algorithm 1 (see ``mcdask.planning.planner``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mcdask.model.plan import Plan, Shard, Stage, stage_label
from mcdask.model.profile import Profile
from mcdask.planning.costmodel import evaluate
from mcdask.planning.pieces import piece_memory_bytes, shard_units
from mcdask.planning.result import (
    PlanResult,
    infeasible_reason,
    with_prediction,
)
from mcdask.planning.search import segments


@dataclass(frozen=True)
class _Task:
    start: int
    end: int
    mode: Literal["D", "M"]
    degree: int


def _tasks_to_plan(workload, tasks: list[_Task], names: tuple[str, ...], merged: list[list[int]]) -> Plan:
    """``merged``: groups of task indices that share one device (single-device tasks only)."""
    stages = []
    pos = 0
    device_of_group = {}
    for group in merged:
        for member in group:
            device_of_group[member] = group[0]
    owner: dict[int, tuple[str, ...]] = {}
    for ti, t in enumerate(tasks):
        if device_of_group.get(ti, ti) != ti:
            owner[ti] = owner[device_of_group[ti]]
            continue
        owner[ti] = names[pos:pos + t.degree]
        pos += t.degree
    for ti, t in enumerate(tasks):
        devs = owner[ti]
        if t.mode == "M":
            units = shard_units(workload.layers[t.end - 1].units, t.degree)
            stages.append(Stage(t.start, t.end, tuple(Shard(u, (d,)) for u, d in zip(units, devs))))
        else:
            stages += [Stage(s, e, (Shard(None, devs),)) for s, e in segments(workload, t.start, t.end)]
    return Plan(workload.name, names[:pos], tuple(stages), "paper")


def paper_plan(workload, profile: Profile, n: int) -> PlanResult:
    names = profile.device_names[:n]
    kind = profile.kind_of(names[0])
    cap = min(profile.kind_of(d).memory_bytes for d in names)
    L = len(workload.layers)

    def need(a, b, units=None):
        return kind.baseline_bytes + piece_memory_bytes(workload, kind, a, b, units)

    # FIND_INITIAL_TASKGROUP: group consecutive layers while they fit
    tasks: list[_Task] = []
    nofit: list[int] = []
    start = 0
    for i in range(1, L + 1):
        if i == L or workload.cut_required(i) or need(start, i + 1) > cap:
            if need(start, i) > cap:
                nofit.append(len(tasks))
            tasks.append(_Task(start, i, "D", 1))
            start = i
    # noFit tasks: the fewest model-parallel shards that fit
    for ti in nofit:
        t = tasks[ti]
        last = workload.layers[t.end - 1]
        k = None
        if last.splittable and workload.stage_outputs(t.start, t.end) == [last.name]:
            for kk in range(2, min(last.units, max(n, 2)) + 1):
                if all(need(t.start, t.end, u) <= cap for u in shard_units(last.units, kk)):
                    k = kk
                    break
        if k is None or k > n:
            return PlanResult(n, None, None, "paper strategy: " + infeasible_reason(workload, profile, n))
        tasks[ti] = _Task(t.start, t.end, "M", k)
    # COMBINE_TASKS: merge consecutive single-device tasks with the lowest combined memory
    groups: list[list[int]] = [[i] for i in range(len(tasks))]
    while sum(tasks[g[0]].degree for g in groups) > n:
        pairs = [(sum(need(tasks[t].start, tasks[t].end) - kind.baseline_bytes for t in g1 + g2)
                  + kind.baseline_bytes, gi)
                 for gi, (g1, g2) in enumerate(zip(groups, groups[1:]))
                 if all(tasks[t].degree == 1 and tasks[t].mode == "D" for t in g1 + g2)]
        if not pairs:
            return PlanResult(n, None, None, f"paper strategy: its {len(tasks)} tasks need "
                              f"{sum(t.degree for t in tasks)} devices and no two consecutive single-device tasks "
                              f"can share a device to get down to {n}")
        mem, gi = min(pairs)
        if mem > cap:
            labels = " + ".join(stage_label(workload, Stage(tasks[t].start, tasks[t].end, ()))
                                for t in groups[gi] + groups[gi + 1])
            return PlanResult(n, None, None, f"paper strategy: to use {n} device(s) it merges {labels} onto one "
                              f"device, which needs {mem:,} bytes > {cap:,} (the paper reloads weights; mcdask "
                              f"keeps them resident)")
        groups[gi:gi + 2] = [groups[gi] + groups[gi + 1]]
    merged = [g for g in groups if len(g) > 1]
    # grow: replace one task by the variant with one more device that predicts the lowest time
    while sum(tasks[g[0]].degree for g in groups) < n:
        best = None
        for ti, t in enumerate(tasks):
            if any(ti in g for g in merged):
                continue
            variants = []
            if t.mode == "D":
                variants.append(_Task(t.start, t.end, "D", t.degree + 1))
            last = workload.layers[t.end - 1]
            if (last.splittable and workload.stage_outputs(t.start, t.end) == [last.name]
                    and not any(workload.cut_required(i) for i in range(t.start + 1, t.end))
                    and t.degree + 1 <= last.units):
                variants.append(_Task(t.start, t.end, "M", t.degree + 1))
            for v in variants:
                trial = tasks[:ti] + [v] + tasks[ti + 1:]
                p = _tasks_to_plan(workload, trial, names, merged)
                cost = evaluate(workload, p, profile)
                if not cost.fits:
                    continue
                score = (cost.period_s, cost.latency_s)
                if best is None or score < best[0]:
                    best = (score, trial)
        if best is None:
            return PlanResult(n, None, None, f"paper strategy: no task variant with one more device fits in memory "
                              f"(stuck at {sum(t.degree for t in tasks)} devices)")
        tasks = best[1]
    p = _tasks_to_plan(workload, tasks, names, merged).validate(workload)
    cost = evaluate(workload, p, profile)
    if not cost.fits:
        dev, (have_need, lim) = sorted(cost.over_memory.items())[0]
        return PlanResult(n, None, None, f"paper strategy: device {dev} holding {', '.join(cost.tasks[dev])} needs "
                          f"{have_need:,} bytes > {lim:,}")
    return PlanResult(n, with_prediction(p, cost), cost)
