"""Choose a task assignment for n devices: a pure function of workload, profile and n.

Two strategies, both scored by :mod:`mcdask.planning.costmodel` and both keeping every device within its
memory (weights stay resident; mcdask never reloads):

``optimal``
    Exact search (maximum predicted IPS, then minimum latency) within this space:

    * the layers are cut into contiguous **cells** at *allowed points*: after a pool, flatten,
      dense or pyramid layer, where a branch ends (the next layer does not read the previous
      one) and before every windowed layer (which must start a stage anyway); never right after
      a conv layer, whose output the next layer pools or flattens;
    * each cell owns its devices (no device is shared between cells) and is one of
      - **data-parallel** ``[a, b)`` on ``r >= 1`` replicas (one stage, or one stage per
        windowed segment, all on the same replicas);
      - **model-parallel**: a split stage ``[c, e)`` whose last layer is dense, cut into
        ``k >= 2`` shards of near-equal units (one device each), optionally with a *head*
        ``[a, c)`` on the first shard's device and a *tail* ``[e, b)`` on the last shard's
        device (this is how a device can hold a conv block and an fc shard, or an fc shard and
        the small fc layers after it);
    * devices of a kind are taken in profile order; a cell may mix kinds.

    The search is a dynamic programme over (cut point, devices used per kind, how the still
    needed outputs leave their producers) that keeps, per state, the Pareto set of (slowest
    closed resource, client busy time, ready times of the open outputs); all three combine
    monotonically (max, sum, max-plus), so the pruning is exact. It returns every n at once.
    Runtime grows with the number of device kinds (exponential in it). Up to
    ``EXACT_MAX_DEVICES`` devices the search is exact (about 1-4 s per workload for 12 pi3s on
    one core); for n beyond that, as a heuristic, the replica and shard counts per cell are
    limited to 1..4 and multiples of 4 (so the result may fall short of the optimum).

``paper``
    The paper's greedy Algorithm 1 (RA-L §IV, notes §1.3): group consecutive layers while they
    fit one device's memory (a layer that does not fit alone is *noFit*); split each noFit dense
    layer into the fewest shards that fit; while more devices are needed than given, merge the
    two consecutive single-device tasks with the lowest combined memory onto one device; while
    fewer, replace one task by its variant with one more device (data-parallel: one more
    replica; model-parallel: one more shard) choosing the replacement with the lowest predicted
    time per frame. Assumes identical devices (it plans with the first device's kind).

Both return plans whose ``predicted`` holds the cost model's ips, latency_s, bottleneck and
memory_bytes per device. Deterministic: no clock, no randomness, sorted iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from mcdask.planning.costmodel import Cost, Export, Memo, Walk, evaluate, piece_memory_bytes, shard_units, value
from mcdask.errors import InfeasiblePlanError, PlanError, ProfileError
from mcdask.model.plan import Plan, Shard, Stage, stage_label
from mcdask.model.profile import Profile

Strategy = Literal["optimal", "paper"]
STRATEGIES = ("optimal", "paper")
#: above this many devices the optimal search restricts replica/shard counts (see module doc)
EXACT_MAX_DEVICES = 12


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
        d.update(predicted_ips=c.ips, predicted_latency_s=c.latency_s, bottleneck=c.bottleneck,
                 assignment=[{"device": dev, "tasks": c.tasks.get(dev, []), "memory_bytes": c.memory_bytes[dev],
                              "memory_limit_bytes": c.memory_limit_bytes[dev]} for dev in self.plan.devices],
                 plan=self.plan.to_dict())
        return d


# ---- public entry points ------------------------------------------------------------------------

def plan(workload, profile: Profile, n: int, strategy: Strategy = "optimal") -> Plan:
    """The plan for exactly ``n`` devices of ``profile``; raises InfeasiblePlanError (with the
    layer and the memory it needs) when nothing fits."""
    result = plan_all(workload, profile, n, strategy, only=n)[0]
    if result.plan is None:
        raise InfeasiblePlanError(result.reason)
    return result.plan


def plan_all(workload, profile: Profile, max_devices: int | None = None, strategy: Strategy = "optimal",
             *, only: int | None = None) -> list[PlanResult]:
    """One :class:`PlanResult` for every n in ``1..max_devices`` (default: all profile devices),
    or just ``n = only``."""
    if strategy not in STRATEGIES:
        raise PlanError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    available = len(profile.devices)
    top = available if max_devices is None else max_devices
    if top < 1 or top > available:
        raise ProfileError(f"asked to plan for up to {top} devices but profile {profile.name!r} has {available}")
    if only is not None and not 1 <= only <= top:
        raise PlanError(f"n={only} is outside 1..{top}")
    for d in profile.devices:
        missing = profile.kinds[d.kind].covers(workload)
        if missing:
            raise ProfileError(f"kind {d.kind!r} (device {d.name}) has no time for {workload.name} layers "
                               f"{missing}; profile them or pick another kind")
    counts = [only] if only is not None else list(range(1, top + 1))
    if strategy == "paper":
        return [_paper(workload, profile, n) for n in counts]
    exact = {n for n in counts if n <= EXACT_MAX_DEVICES}
    found = _Optimal(workload, profile, min(top, EXACT_MAX_DEVICES)).run(exact) if exact else {}
    if len(exact) < len(counts):
        found.update(_Optimal(workload, profile, top, exact=False).run(set(counts) - exact))
    out = []
    for n in counts:
        if n in found:
            p = found[n]
            cost = evaluate(workload, p, profile)
            out.append(PlanResult(n, _with_prediction(p, cost), cost))
        else:
            out.append(PlanResult(n, None, None, infeasible_reason(workload, profile, n)))
    return out


def _with_prediction(p: Plan, cost: Cost) -> Plan:
    return Plan(p.workload, p.devices, p.stages, p.strategy, cost.predicted(), p.note)


# ---- why nothing fits ------------------------------------------------------------------------------

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
    i, need = worst
    if n == 1:
        total = kind.baseline_bytes + sum(piece_memory_bytes(workload, kind, a, b)
                                          for a, b in _segments(workload, 0, len(workload.layers)))
        big = sorted(workload.layers, key=lambda l: -l.param_bytes)[:2]
        return (f"all of {workload.name} on one device needs {total:,} bytes (largest layers: "
                + ", ".join(f"{l.name!r} {l.param_bytes:,} weight bytes" for l in big)
                + f"; baseline {kind.baseline_bytes:,}); {biggest.name} ({kind.kind}) has {kind.memory_bytes:,}")
    return (f"no assignment of {workload.name} onto exactly {n} device(s) fits in memory within the search "
            f"space; the largest single layer, {workload.layers[i].name!r}, needs {need:,} bytes with baseline "
            f"(device memory {kind.memory_bytes:,})")


# ---- the exact search -------------------------------------------------------------------------------

def allowed_cuts(workload) -> list[int]:
    """Cell boundaries the optimal search may use (module docstring), including 0 and L."""
    L = len(workload.layers)
    out = [0]
    for p in range(1, L):
        prev, cur = workload.layers[p - 1], workload.layers[p]
        if (workload.cut_required(p) or prev.kind in ("pool", "flatten", "dense", "pyramid")
                or prev.name not in cur.inputs):
            out.append(p)
    out.append(L)
    return out


def _segments(workload, a: int, b: int) -> list[tuple[int, int]]:
    """``[a, b)`` cut at every windowed layer (each must start a stage)."""
    cuts = [a] + [i for i in range(a + 1, b) if workload.cut_required(i)] + [b]
    return list(zip(cuts, cuts[1:]))


@dataclass(frozen=True)
class _Cell:
    """A cell: stages on devices (ids ``(kind index, j)`` = j-th device of that kind used here)."""

    start: int
    end: int
    stages: tuple[Stage, ...]        # with device names filled in
    uses: tuple[int, ...]            # devices used per kind


@dataclass
class _Entry:
    closed: float
    client: float
    ready: tuple[float, ...]
    cells: tuple | None = field(default=None)   # linked list (cell, parent cells)


class _Optimal:
    def __init__(self, workload, profile: Profile, top: int, exact: bool = True):
        self.exact = exact
        self.w = workload
        self.p = profile
        self.top = top
        self.L = len(workload.layers)
        order: list[str] = []
        for d in profile.devices:
            if d.kind not in order:
                order.append(d.kind)
        self.kind_names = order
        self.kinds = [profile.kinds[k] for k in order]
        self.names = [[d.name for d in profile.devices if d.kind == k] for k in order]
        self.avail = tuple(min(len(x), top) for x in self.names)
        self.cuts = allowed_cuts(workload)
        self.next_cuts = {c: [x for x in self.cuts if x > c] for c in self.cuts}
        self.consumers_from = {}
        for x in list(workload.inputs) + [l.name for l in workload.layers]:
            cons = workload.consumers(x) if x not in workload.inputs else \
                [i for i, l in enumerate(workload.layers) if x in l.inputs]
            self.consumers_from[x] = max(cons) if cons else -1
        self.memo = Memo(workload, profile)
        self.mem = lru_cache(maxsize=None)(self._mem)
        self._cell_cache: dict = {}

    # -- cached per-piece facts
    def _mem(self, ki: int, a: int, b: int, units) -> int:
        return piece_memory_bytes(self.w, self.kinds[ki], a, b, units)

    def _counts(self, r: int, used: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Ways to take ``r`` more devices per kind, given ``used``."""
        left = [a - u for a, u in zip(self.avail, used)]
        out: list[tuple[int, ...]] = []

        def rec(i, remaining, acc):
            if i == len(left) - 1:
                if remaining <= left[i]:
                    out.append(tuple(acc + [remaining]))
                return
            for c in range(min(remaining, left[i]), -1, -1):
                rec(i + 1, remaining - c, acc + [c])

        rec(0, r, [])
        return out

    def _degrees(self, most: int) -> list[int]:
        if self.exact:
            return list(range(1, most + 1))
        return [r for r in range(1, most + 1) if r <= 4 or r % 4 == 0]

    def _take(self, used, take) -> list[tuple[int, str]]:
        """(kind index, device name) of the devices a cell takes, in kind order."""
        out = []
        for ki, (u, t) in enumerate(zip(used, take)):
            out += [(ki, self.names[ki][j]) for j in range(u, u + t)]
        return out

    def _fits(self, pieces: dict[str, tuple[int, int]]) -> bool:
        """pieces: device -> (kind index, summed piece memory)."""
        return all(self.kinds[ki].baseline_bytes + m <= self.kinds[ki].memory_bytes for ki, m in pieces.values())

    def cells_from(self, a: int, used: tuple[int, ...]) -> list[_Cell]:
        key = (a, used)
        if key not in self._cell_cache:
            self._cell_cache[key] = list(self._gen_cells(a, used))
        return self._cell_cache[key]

    def _gen_cells(self, a: int, used: tuple[int, ...]):
        w = self.w
        most = sum(self.avail) - sum(used)
        for b in self.next_cuts[a]:
            segs = _segments(w, a, b)
            # data-parallel cell
            for r in self._degrees(most):
                for take in self._counts(r, used):
                    devs = self._take(used, take)
                    if not all(self.kinds[ki].baseline_bytes + sum(self.mem(ki, s, e, None) for s, e in segs)
                               <= self.kinds[ki].memory_bytes for ki, _ in devs):
                        continue
                    names = tuple(n for _, n in devs)
                    stages = tuple(Stage(s, e, (Shard(None, names),)) for s, e in segs)
                    yield _Cell(a, b, stages, take)
            # model-parallel cells: head [a, c), split [c, e), tail [e, b)
            for c in [x for x in self.cuts if a <= x < b]:
                for e in [x for x in self.cuts if c < x <= b]:
                    last = w.layers[e - 1]
                    if (not last.splittable or any(w.cut_required(i) for i in range(c + 1, e))
                            or self.memo.io(c, e)[1] != [last.name]):
                        continue
                    head, tail = _segments(w, a, c) if c > a else [], _segments(w, e, b) if b > e else []
                    for k in self._degrees(min(most, last.units)):
                        if k < 2:
                            continue
                        units = shard_units(last.units, k)
                        for take in self._counts(k, used):
                            devs = self._take(used, take)
                            load = {n: (ki, self.mem(ki, c, e, u)) for (ki, n), u in zip(devs, units)}
                            k0, n0 = devs[0]
                            kl, nl = devs[-1]
                            load[n0] = (k0, load[n0][1] + sum(self.mem(k0, s, t, None) for s, t in head))
                            load[nl] = (kl, load[nl][1] + sum(self.mem(kl, s, t, None) for s, t in tail))
                            if not self._fits(load):
                                continue
                            split = Stage(c, e, tuple(Shard(u, (n,)) for (_, n), u in zip(devs, units)))
                            stages = (tuple(Stage(s, t, (Shard(None, (n0,)),)) for s, t in head) + (split,)
                                      + tuple(Stage(s, t, (Shard(None, (nl,)),)) for s, t in tail))
                            yield _Cell(a, b, stages, take)

    def run(self, wanted: set[int]) -> dict[int, Plan]:
        w = self.w
        # the workload inputs leave the client, ready at 0
        base = Walk(w, self.p).exports
        zero = tuple(0 for _ in self.avail)
        # state key: (pos, used, open signature); value: list of _Entry (Pareto front)
        states: dict[tuple, list[_Entry]] = {(0, zero, ()): [_Entry(0.0, 0.0, ())]}
        sig_exports: dict[tuple, dict[str, Export]] = {(): {}}
        best: dict[int, tuple] = {}
        for a in self.cuts:
            keys = sorted((k for k in states if k[0] == a), key=lambda k: (k[1], repr(k[2])))
            for key in keys:
                front = states.pop(key)
                _, used, sig = key
                open_ex = sig_exports[sig]
                if a == self.L:
                    self._finish(open_ex, front, sum(used), wanted, best)
                    continue
                for cell in self.cells_from(a, used):
                    self._step(cell, used, open_ex, sig, front, states, sig_exports, base)
        return {n: self._build(best[n][3]) for n in sorted(best)}

    def _symbolic(self, open_ex: dict[str, Export]) -> dict[str, Export]:
        out = {}
        for name, ex in open_ex.items():
            out[name] = Export(ex.shards, ex.nbytes, tuple({(name, h): 0.0} for h in range(len(ex.shards))))
        return out

    def _step(self, cell: _Cell, used, open_ex, sig, front, states, sig_exports, base) -> None:
        w = self.w
        exports = dict(base)
        exports.update(self._symbolic(open_ex))
        walk = Walk(w, self.p, exports, self.memo, track=False)
        for st in cell.stages:
            walk.stage(st)
        closed = max(list(walk.compute.values()) + list(walk.links.values()))
        # outputs still needed after this cell (or the workload output)
        keep = {}
        for name, ex in walk.exports.items():
            if name in w.inputs:
                continue
            if name == w.output or self.consumers_from[name] >= cell.end:
                keep[name] = ex
        names = sorted(keep)
        new_sig = tuple((n, keep[n].shards, keep[n].nbytes) for n in names)
        if new_sig not in sig_exports:
            sig_exports[new_sig] = {n: Export(keep[n].shards, keep[n].nbytes, ()) for n in names}
        new_used = tuple(u + t for u, t in zip(used, cell.uses))
        new_key = (cell.end, new_used, new_sig)
        old_keys = [(n, h) for n, shards, _ in sig for h in range(len(shards))]
        target = states.setdefault(new_key, [])
        for entry in front:
            origins = {"origin": 0.0}
            origins.update(zip(old_keys, entry.ready))
            ready = tuple(value(r, origins) for n in names for r in keep[n].ready)
            cand = _Entry(max(entry.closed, closed), entry.client + walk.client, ready, (cell, entry.cells))
            _insert(target, cand)

    def _finish(self, open_ex, front, n, wanted, best) -> None:
        if n not in wanted:
            return
        w = self.w
        walk = Walk(w, self.p, self._symbolic(open_ex), self.memo, track=False)
        done = walk.finish()
        keys = [(name, h) for name, ex in sorted(open_ex.items()) for h in range(len(ex.shards))]
        for entry in front:
            origins = dict(zip(keys, entry.ready))
            period = max(entry.closed, entry.client + walk.client)
            latency = value(done, origins)
            score = (period, latency)
            if n not in best or score < best[n][:2] or (score == best[n][:2] and
                                                        self._order(entry.cells) < best[n][2]):
                best[n] = (period, latency, self._order(entry.cells), entry.cells)

    @staticmethod
    def _cells(linked) -> list[_Cell]:
        out = []
        while linked is not None:
            cell, linked = linked
            out.append(cell)
        return out[::-1]

    def _order(self, linked) -> str:
        return repr([(c.start, c.end, [s.to_dict() for s in c.stages]) for c in self._cells(linked)])

    def _build(self, linked) -> Plan:
        stages = tuple(st for c in self._cells(linked) for st in c.stages)
        devices: list[str] = []
        for st in stages:
            for sh in st.shards:
                for d in sh.devices:
                    if d not in devices:
                        devices.append(d)
        return Plan(self.w.name, tuple(devices), stages, "optimal").validate(self.w)


def _insert(front: list[_Entry], cand: _Entry) -> None:
    """Keep ``front`` Pareto-minimal in (closed, client, ready...); earlier entries win ties."""
    cv = (cand.closed, cand.client) + cand.ready
    keep = []
    for e in front:
        ev = (e.closed, e.client) + e.ready
        if all(x <= y for x, y in zip(ev, cv)):
            return
        if not all(y <= x for x, y in zip(ev, cv)):
            keep.append(e)
    keep.append(cand)
    front[:] = keep


# ---- the paper's Algorithm 1 --------------------------------------------------------------------

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
        for t in group:
            device_of_group[t] = group[0]
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
            stages += [Stage(s, e, (Shard(None, devs),)) for s, e in _segments(workload, t.start, t.end)]
    return Plan(workload.name, names[:pos], tuple(stages), "paper")


def _paper(workload, profile: Profile, n: int) -> PlanResult:
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
        pairs = [(sum(need(tasks[t].start, tasks[t].end) - kind.baseline_bytes for t in g1 + g2) + kind.baseline_bytes, gi)
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
    return PlanResult(n, _with_prediction(p, cost), cost)
