"""The bench's arithmetic: energy per inference, compute and link bounds, scaling efficiency.

Pure functions on plain numbers, tested on fixed inputs (tests/test_bench_metrics.py).
"""

from __future__ import annotations

from .paper import PI3_FULL_W, PI3_IDLE_W


def energy_per_inference(utilisation: dict[str, float], ips: float, idle_w: float = PI3_IDLE_W,
                         full_w: float = PI3_FULL_W) -> dict[str, float]:
    """Joules per inference of a farm, split as the paper does.

    Each device draws ``idle_w + (full_w - idle_w) * u`` watts at utilisation ``u`` (clamped
    to [0, 1]). Static energy is the idle power of every device over one inference period
    (``1 / ips``); dynamic is the rest.
    """
    if ips <= 0:
        raise ValueError(f"ips must be positive to share energy over inferences, got {ips}")
    us = [min(1.0, max(0.0, u)) for u in utilisation.values()]
    static_w = idle_w * len(us)
    dynamic_w = (full_w - idle_w) * sum(us)
    return {"static_j": static_w / ips, "dynamic_j": dynamic_w / ips, "total_j": (static_w + dynamic_w) / ips,
            "power_w": static_w + dynamic_w}


def compute_bound_ips(whole_model_s: dict[str, float]) -> float:
    """Frames per second if every device computed whole frames all the time: sum of 1 / t."""
    return sum(1.0 / t for t in whole_model_s.values())


def placement_bound_ips(workload, profile, devices: int) -> float | None:
    """The compute-and-memory bound: the best IPS any plan in the planner's space reaches on
    ``profile``'s devices with free links and no per-task, per-dependency or per-message cost
    (``None``: none fits). Below
    ``compute_bound_ips`` when memory pins layers to devices (a 1 GB device cannot hold a
    whole VGG16, so its conv stages cannot be replicated on every device)."""
    from dataclasses import replace

    from mcdask.errors import PlanError, ProfileError
    from mcdask.model.profile import OVERHEADS, LinkModel
    from mcdask.planning.planner import plan

    free = replace(profile, default_link=LinkModel(0.0, 1e18), links=(), host_task_overhead_s={},
                   host_frame_overhead_s={},
                   kinds={k: replace(v, **dict.fromkeys(OVERHEADS, 0.0)) for k, v in profile.kinds.items()})
    try:
        return plan(workload, free, devices, "optimal").predicted["ips"]
    except (PlanError, ProfileError):
        return None


def link_bound_ips(busy_s: dict[str, float]) -> float:
    """The links' limit alone, from a cost model's busy seconds per frame.

    The cost model books transfers per device pair (``link a<->b``). On a farm every device
    has one shaped link that carries all of its traffic, so a device's link is busy for the
    sum of its pairs; the client's link (frames out, results in) is its own entry.
    """
    per_end: dict[str, float] = {}
    for name, t in busy_s.items():
        if name.startswith("link ") and "<->" in name:
            a, b = name[len("link "):].split("<->")
            per_end[a] = per_end.get(a, 0.0) + t
            per_end[b] = per_end.get(b, 0.0) + t
        elif name.startswith("client"):
            per_end["client"] = per_end.get("client", 0.0) + t
    worst = max(per_end.values(), default=0.0)
    return 1.0 / worst if worst > 0 else float("inf")


def efficiency(measured_ips: float, *bounds: float) -> float:
    """Measured IPS over the tightest of the bounds."""
    return measured_ips / min(bounds)


def utilisation(compute_s: dict[str, float], wall_s: float) -> dict[str, float]:
    """Busy fraction of each device from its summed task compute seconds over the run."""
    return {d: t / wall_s for d, t in compute_s.items()}
