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

A profile is a few percent off, so plans predicted within that of each other cannot be told
apart before they run: ``plan_top`` gives the runners-up the search kept beside the plan, for
a bench to measure.
"""

from __future__ import annotations

from typing import Literal

from mcdask.errors import InfeasiblePlanError, PlanError, ProfileError
from mcdask.model.plan import Plan
from mcdask.model.profile import Profile
from mcdask.planning.costmodel import evaluate
from mcdask.planning.paper import paper_plan
from mcdask.planning.result import PlanResult, infeasible_reason, with_prediction
from mcdask.planning.search import OptimalSearch

Strategy = Literal["optimal", "paper"]
STRATEGIES = ("optimal", "paper")
#: above this many devices the optimal search restricts replica/shard counts (see module doc)
EXACT_MAX_DEVICES = 12


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
    top = _checked(workload, profile, max_devices, strategy, only)
    counts = [only] if only is not None else list(range(1, top + 1))
    if strategy == "paper":
        return [paper_plan(workload, profile, n) for n in counts]
    found = _optimal(workload, profile, top, counts)
    out = []
    for n in counts:
        if n in found:
            p = found[n][0]
            cost = evaluate(workload, p, profile)
            out.append(PlanResult(n, with_prediction(p, cost), cost))
        else:
            out.append(PlanResult(n, None, None, infeasible_reason(workload, profile, n)))
    return out


#: how close to the best predicted IPS a runner-up of ``plan_top`` must be (a profile's error)
TOP_WITHIN = 0.10


def plan_top(workload, profile: Profile, n: int, k: int = 3, within: float = TOP_WITHIN,
             strategy: Strategy = "optimal") -> list[Plan]:
    """Up to ``k`` plans of distinct structure for exactly ``n`` devices, each with its
    prediction, keeping those predicted within ``within`` of the first's IPS (at least
    ``(1 - within)`` x its IPS): choices a profile a few percent off cannot tell apart. The
    first is ``plan(workload, profile, n, strategy)``.

    Distinct: the stages and shards differ, not only which device of a kind holds a piece
    (the search takes each kind's devices in profile order, and of plans whose stages are
    equal once each device is read as its kind keeps the best). The rest follow in the search's order
    (period, then latency), which is the prediction's order unless the profile has shared
    hosts (the search does not price them; ``evaluate`` does). They are the best complete
    plans the search kept, not a proven k-best: its Pareto pruning drops partial plans
    dominated by another one, and a runner-up may go with them. ``paper`` gives its one plan.
    Raises PlanError for ``k < 1`` or ``within`` outside [0, 1), InfeasiblePlanError when
    nothing fits."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PlanError(f"k (how many plans) must be a whole number >= 1, got {k!r}")
    if isinstance(within, bool) or not isinstance(within, (int, float)) or not 0 <= within < 1:
        raise PlanError(f"within (the IPS margin) must be in [0, 1), e.g. 0.1 for 10 %, got {within!r}")
    top = _checked(workload, profile, None, strategy, n)
    if strategy == "paper":
        return [plan(workload, profile, n, strategy)]
    found = _optimal(workload, profile, top, [n], keep=k).get(n)
    if not found:
        raise InfeasiblePlanError(infeasible_reason(workload, profile, n))
    out = [with_prediction(p, evaluate(workload, p, profile)) for p in found]
    best = out[0].predicted["ips"]
    return [p for p in out if p.predicted["ips"] >= (1 - within) * best]


# ---- helpers ------------------------------------------------------------------------------------

def _checked(workload, profile: Profile, max_devices: int | None, strategy: str, only: int | None) -> int:
    """Check the arguments plan_all takes; the largest device count to plan for."""
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
    return top


def _optimal(workload, profile: Profile, top: int, counts: list[int], keep: int = 1) -> dict[int, list[Plan]]:
    """The optimal search's plans (up to ``keep``, best first) for each feasible n in ``counts``:
    exact up to EXACT_MAX_DEVICES, the restricted search above."""
    exact = {n for n in counts if n <= EXACT_MAX_DEVICES}
    found = OptimalSearch(workload, profile, min(top, EXACT_MAX_DEVICES), keep=keep).run_top(exact) if exact else {}
    if len(exact) < len(counts):
        found.update(OptimalSearch(workload, profile, top, exact=False, keep=keep).run_top(set(counts) - exact))
    return found
