"""The ``optimal`` strategy's exact search (see ``mcdask.planning.planner``): cells at allowed
cut points, a dynamic programme over (cut point, devices used per kind, open outputs) that keeps
a Pareto front per state."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache

from mcdask.model.plan import Plan, Shard, Stage
from mcdask.model.profile import Profile
from mcdask.planning.costmodel import Export, Memo, Walk, value
from mcdask.planning.pieces import piece_memory_bytes, shard_units


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


def segments(workload, a: int, b: int) -> list[tuple[int, int]]:
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


class OptimalSearch:
    """``keep``: how many complete plans to keep per device count (``run_top``), best first by
    (period, latency, cell order); the first is always the one ``run`` returns."""

    def __init__(self, workload, profile: Profile, top: int, exact: bool = True, keep: int = 1):
        self.exact = exact
        self.w = workload
        self.p = profile
        self.top = top
        self.keep = keep
        self.kind_of = {d.name: d.kind for d in profile.devices}
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
            segs = segments(w, a, b)
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
                    head, tail = segments(w, a, c) if c > a else [], segments(w, e, b) if b > e else []
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
        """The best plan for every feasible n in ``wanted``."""
        return {n: plans[0] for n, plans in self.run_top(wanted).items()}

    def run_top(self, wanted: set[int]) -> dict[int, list[Plan]]:
        """Up to ``keep`` plans of distinct structure for every feasible n in ``wanted``, best
        first. The first is the optimum; the others are the best complete plans the search
        still held, not a proven k-best: the Pareto pruning drops partial plans dominated by
        another one, and with them complete plans that could rank second."""
        w = self.w
        # the workload inputs leave the client, ready at 0
        base = Walk(w, self.p).exports
        zero = tuple(0 for _ in self.avail)
        # state key: (pos, used, open signature); value: list of _Entry (Pareto front)
        states: dict[tuple, list[_Entry]] = {(0, zero, ()): [_Entry(0.0, 0.0, ())]}
        sig_exports: dict[tuple, dict[str, Export]] = {(): {}}
        best: dict[int, list[tuple]] = {}
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
        return {n: [self._build(c[3]) for c in best[n]] for n in sorted(best) if best[n]}

    def _symbolic(self, open_ex: dict[str, Export]) -> dict[str, Export]:
        out = {}
        for name, ex in open_ex.items():
            out[name] = Export(ex.shards, ex.nbytes, tuple({(name, h): 0.0} for h in range(len(ex.shards))), ex.source)
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
        new_sig = tuple((n, keep[n].shards, keep[n].nbytes, keep[n].source) for n in names)
        if new_sig not in sig_exports:
            sig_exports[new_sig] = {n: Export(keep[n].shards, keep[n].nbytes, (), keep[n].source) for n in names}
        new_used = tuple(u + t for u, t in zip(used, cell.uses))
        new_key = (cell.end, new_used, new_sig)
        old_keys = [(n, h) for n, shards, _, _ in sig for h in range(len(shards))]
        target = states.setdefault(new_key, [])
        for entry in front:
            origins: dict[object, float] = {"origin": 0.0}
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
        kept = best.setdefault(n, [])
        for entry in front:
            origins = dict(zip(keys, entry.ready))
            period = max(entry.closed, entry.client + walk.client)
            latency = value(done, origins)
            if len(kept) == self.keep and (period, latency) > kept[-1][:2]:
                continue
            cand = (period, latency, self._order(entry.cells), entry.cells)
            if len(kept) < self.keep or cand[:3] < kept[-1][:3]:
                self._offer(kept, cand + (self._shape(entry.cells),))

    def _offer(self, kept: list[tuple], cand: tuple) -> None:
        """Put ``cand`` (period, latency, order, cells, shape) into ``kept`` (sorted, at most
        ``keep``), unless a better one of the same shape is there; a worse one of it goes."""
        twin = next((i for i, c in enumerate(kept) if c[4] == cand[4]), None)
        if twin is not None:
            if kept[twin][:3] <= cand[:3]:
                return
            del kept[twin]
        bisect.insort(kept, cand, key=lambda c: c[:3])
        del kept[self.keep:]

    def _shape(self, linked) -> tuple:
        """The stages without device names: each shard's devices as their sorted kinds."""
        return tuple((st.start, st.end, tuple((sh.units, tuple(sorted(self.kind_of[d] for d in sh.devices)))
                                              for sh in st.shards))
                     for c in self._cells(linked) for st in c.stages)

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


