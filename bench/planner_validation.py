"""Planner validation on the paper's Raspberry Pi 3 profile; prints one JSON object.

    python bench/planner_validation.py [--devices 12] [--profile pi3]

* ``tables``: predicted IPS / latency for n = 1..N, every workload, both strategies;
* ``runtime_s``: wall time of each ``plan_all`` (the optimal search should stay under 10 s
  for N = 12 on a 2-core machine);
* ``paper_plans``: the paper's hand-made plans predicted on the profile beside the IPS the
  paper measured, and the optimal / paper-strategy predictions for the same device count;
* ``targets``: optimal >= paper strategy and >= the paper's plans for every n; AlexNet on 6
  devices >= 10 IPS. Reported, never tuned for: the profiles come from published numbers.
"""

from __future__ import annotations

import argparse
import json
import time

import workloads
from mcdask import plans
from mcdask.model.kinds import homogeneous
from mcdask.planning.costmodel import evaluate
from mcdask.planning.planner import plan_all
from mcdask.planning.result import PlanResult


def _table_row(r: PlanResult, w) -> dict:
    """One row of a table: the prediction of a feasible plan, else None in its place."""
    row: dict = {"devices": r.devices, "feasible": r.feasible, "ips": None, "latency_s": None,
                 "bottleneck": None, "plan": None, "reason": r.reason or None}
    if r.plan is not None:
        assert r.cost is not None, "a feasible result carries its cost"
        row.update(ips=round(r.cost.ips, 4), latency_s=round(r.cost.latency_s, 4), bottleneck=r.cost.bottleneck,
                   plan=r.plan.describe(w))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=12)
    ap.add_argument("--profile", default="pi3")
    args = ap.parse_args()
    N = args.devices
    prof = homogeneous(args.profile, N)
    tables: dict = {}
    runtime: dict = {}
    for name in workloads.NAMES:
        w = workloads.get(name)
        for strategy in ("optimal", "paper"):
            t0 = time.perf_counter()
            res = plan_all(w, prof, N, strategy)
            runtime[f"{name}/{strategy}"] = round(time.perf_counter() - t0, 3)
            tables.setdefault(name, {})[strategy] = [_table_row(r, w) for r in res]
    paper_rows = []
    for pname in plans.names():
        hand = plans.load(pname)
        w = workloads.get(hand.workload)
        n = len(hand.devices)
        c = evaluate(w, hand, homogeneous(args.profile, names=hand.devices))
        measured = plans.measured_ips(pname)
        row = {"plan": pname, "devices": n, "predicted_ips": round(c.ips, 4), "fits": c.fits,
               "predicted_latency_s": round(c.latency_s, 4), "bottleneck": c.bottleneck,
               "paper_measured_ips": measured,
               "predicted_over_measured": round(c.ips / measured, 3) if measured else None}
        if n <= N:
            row["optimal_ips"] = tables[w.name]["optimal"][n - 1]["ips"]
            row["paper_strategy_ips"] = tables[w.name]["paper"][n - 1]["ips"]
        paper_rows.append(row)

    def ge(a, b):
        return b is None or (a is not None and a >= b * (1 - 1e-9))

    opt_vs_strategy = {name: all(ge(o["ips"], p["ips"]) for o, p in zip(t["optimal"], t["paper"]))
                       for name, t in tables.items()}
    opt_vs_hand = {r["plan"]: ge(r.get("optimal_ips"), r["predicted_ips"]) for r in paper_rows if "optimal_ips" in r}
    alex6 = tables["alexnet"]["optimal"][5]["ips"] if N >= 6 else None
    out = {"profile": prof.name, "devices": N, "tables": tables, "runtime_s": runtime, "paper_plans": paper_rows,
           "targets": {"optimal_ge_paper_strategy_every_n": opt_vs_strategy,
                       "optimal_ge_paper_plans": opt_vs_hand,
                       "alexnet_6_devices_ips": alex6, "alexnet_6_devices_ge_10_ips": alex6 is not None and alex6 >= 10,
                       "optimal_n12_under_10_s": {k: v < 10 for k, v in runtime.items() if k.endswith("/optimal")}}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
