"""``mcdask bench --top K``: measure the planner's runners-up beside its plan and keep the winner.

A profile is a few percent off, so plans predicted within that of each other
(``mcdask.planning.planner.plan_top``) cannot be ranked before they run. Each is measured as
the bench measures one plan; the (workload, n) row carries the winner's figures, every
candidate's summary, and by how much the winner beat the planner's choice (candidate 0).
"""

from __future__ import annotations

from collections.abc import Callable

#: a candidate's measured figures kept in the row's ``candidates`` list, as the row names them
KEPT = ("ips", "latency_p50_s", "latency_p99_s", "errors", "efficiency", "measured_over_predicted")


def summary(plan, row: dict) -> dict:
    """One candidate for the row's ``candidates``: its plan, its prediction, and its measured IPS
    at Pi speed (``measured_ips``, comparable with ``predicted_ips``)."""
    return {"plan_id": plan.id, "predicted_ips": plan.predicted.get("ips"),
            "predicted_latency_s": plan.predicted.get("latency_s"), "measured_ips": row["ips_pi_speed"],
            **{k: row.get(k) for k in KEPT}}


def choose(plans: list, rows: list[dict]) -> dict:
    """The row of a (workload, n) whose candidates ``plans`` (planner's choice first) measured
    ``rows``: the winner's row (highest measured IPS; the earlier on a tie) with ``candidates``,
    ``winner``, ``planner_choice`` and ``won_by`` (winner's measured IPS / the choice's)."""
    if not plans or len(plans) != len(rows):
        raise ValueError(f"need one measured row per candidate, got {len(plans)} plans and {len(rows)} rows")
    best = max(range(len(rows)), key=lambda i: (rows[i]["ips_pi_speed"], -i))
    first = rows[0]["ips_pi_speed"]
    row = dict(rows[best])
    row.update(candidates=[summary(p, r) for p, r in zip(plans, rows)], winner=plans[best].id,
               planner_choice=plans[0].id, won_by=rows[best]["ips_pi_speed"] / first if first else None)
    return row


def measure_all(plans: list, measure: Callable[[object], dict], log=print) -> dict:
    """Measure every candidate with ``measure(plan) -> row`` (as the bench measures one plan)
    and :func:`choose`; a failure stops here, as it would for one plan."""
    rows: list[dict] = []
    for i, p in enumerate(plans):
        log(f"    candidate {i + 1}/{len(plans)}: plan {p.id}, predicted {p.predicted.get('ips', 0):.2f} IPS")
        rows.append(measure(p))
        ips, first = rows[-1]["ips_pi_speed"], rows[0]["ips_pi_speed"]
        log(f"      measured {ips:.2f} IPS at Pi speed"
            + (f", {ips / first:.3f} x the planner's choice" if first else ""))
    row = choose(plans, rows)
    log(f"    winner {row['winner']}" + (f", {row['won_by']:.3f} x the planner's choice" if row["won_by"] else ""))
    return row
