"""Measured vs predicted throughput on local clusters; prints one JSON object (last stdout line).

    python bench/local_prediction.py [--workload alexnet ...] [--devices 2 4] [--repeats 5]

For each workload and worker count: start a ``LocalCluster`` of one-thread workers (TensorFlow
intra-op threads 1), profile it with ``mcdask.profiling.assemble.profile_cluster`` (no cache), plan
with the optimal strategy, deploy, stream synthetic frames and compare:

* ``predicted_ips``: the cost model's IPS for the plan on the measured profile;
* ``measured_ips``: steady-state frames per second, from the times the ordered results come
  out, between the first classified frame past 20 % of the stream and the last one (pipeline
  fill and drain excluded); ``overall_ips`` is classified frames / whole stream wall time;
* ``ratio`` = measured / predicted; the target is within 15 % (0.85 .. 1.15).

Every output is also checked against the unsplit model (``max_abs_diff``). Not a test: the
machine has 2 cores shared by the workers, the scheduler, this client and whatever else runs,
so the numbers are noisy; each profile time is a median, the stream is one run.
Results are also written to ``local_prediction.json`` in the results folder
(``bench.provenance.results_dir``: ``bench/results`` in a checkout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import dask

import workloads
from bench.provenance import results_dir
from mcdask.commands import check_against_reference
from mcdask.planning.pieces import piece_time_s
from mcdask.planning.planner import plan as make_plan
from mcdask.profiling.assemble import profile_cluster
from mcdask.profiling.overhead import cpu_seconds
from mcdask.runtime.deploy import DaskRunner, deploy
from mcdask.runtime.weights import WeightsSource
from mcdask.streaming.records import Record
from mcdask.streaming.sources import Feeder, open_source
from mcdask.streaming.stream import Stream

FRAMES = {"alexnet": 100, "vgg16": 30, "action": 120}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cpu(client) -> dict:
    """CPU seconds so far: each worker process, this process (client + LocalCluster scheduler), the machine."""
    import psutil

    t = psutil.Process().cpu_times()
    m = psutil.cpu_times()
    return {"workers": {a: c for a, (_, _, c) in client.run(cpu_seconds).items()},
            "client": t.user + t.system, "machine": m.user + m.system}


def steady_ips(times: list[float], skip_fraction: float = 0.2) -> float | None:
    """Frames per second between the result at ``skip_fraction`` of the stream and the last."""
    if len(times) < 5:
        return None
    k = int(len(times) * skip_fraction)
    span = times[-1] - times[k]
    return (len(times) - 1 - k) / span if span > 0 else None


def _latency_s(rec: Record) -> float:
    """The latency of an answered frame (the stream sets it on every "ok" record)."""
    assert rec.latency_s is not None, f"frame {rec.frame} is ok but carries no latency"
    return rec.latency_s


def one(workload: str, n: int, repeats: int, frames: int, depth: int | None) -> dict:
    from distributed import Client, LocalCluster

    w = workloads.get(workload)
    items = list(Feeder(w).items(open_source("synthetic", w, 0), frames))
    weights = WeightsSource()
    with dask.config.set({"mcdask.worker.intra-op-threads": 1,
                          "distributed.comm.compression": dask.config.get("mcdask.compression")}), \
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        t0 = time.perf_counter()
        prof = profile_cluster(client, [workload], repeats=repeats)
        profile_s = time.perf_counter() - t0
        results_dir().mkdir(parents=True, exist_ok=True)
        prof.save(results_dir() / f"profile-{workload}-{n}w.json")
        plan = make_plan(w, prof, n, "optimal")
        _say(f"{workload} on {n} workers: profiled in {profile_s:.0f} s; plan: " + "; ".join(plan.describe(w)))
        dep = deploy(client, plan, weights)
        stream = Stream(DaskRunner(client, dep), plan, w, depth)
        records, out_times = [], []
        cpu0 = _cpu(client)
        t0 = time.perf_counter()
        for rec in stream.run(items):
            records.append(rec)
            if rec.status == "ok":
                out_times.append(time.perf_counter())
        wall = time.perf_counter() - t0
        cpu1 = _cpu(client)
        tasks = sum(len(st.shards) for st in plan.stages) * frames
        cpu = {"workers_ms_per_task": round(1e3 * sum(cpu1["workers"][a] - cpu0["workers"][a]
                                                      for a in cpu0["workers"]) / tasks, 2),
               "workers_compute_ms_per_task_predicted": round(1e3 * sum(
                   piece_time_s(w, prof.kind_of(sh.devices[0]), st.start, st.end, sh.units)
                   for st in plan.stages for sh in st.shards) / sum(len(st.shards) for st in plan.stages), 2),
               "client_and_scheduler_ms_per_task": round(1e3 * (cpu1["client"] - cpu0["client"]) / tasks, 2),
               "machine_busy_cores": round((cpu1["machine"] - cpu0["machine"]) / wall, 2),
               "mcdask_busy_cores": round((sum(cpu1["workers"].values()) - sum(cpu0["workers"].values())
                                           + cpu1["client"] - cpu0["client"]) / wall, 2)}
    check = check_against_reference(w, items, records, weights)
    ok = sum(r.status == "ok" for r in records)
    lat = sorted(_latency_s(r) for r in records if r.status == "ok")
    measured = steady_ips(out_times)
    predicted = plan.predicted["ips"]
    row = {"workload": workload, "devices": n, "frames": frames, "classified": ok,
           "predicted_ips": round(predicted, 2), "measured_ips": None if measured is None else round(measured, 2),
           "overall_ips": round(ok / wall, 2), "ratio": None if measured is None else round(measured / predicted, 3),
           "within_15pct": None if measured is None else abs(measured / predicted - 1) <= 0.15,
           "bottleneck": plan.predicted["bottleneck"], "predicted_latency_s": plan.predicted["latency_s"],
           "measured_latency_p50_s": round(lat[len(lat) // 2], 4) if lat else None, "depth": stream.depth,
           "plan": plan.describe(w), "profile_s": round(profile_s, 1), "equal": check["equal"],
           "max_abs_diff": check["max_abs_diff"],
           "task_overhead_s": {d: round(k.task_overhead_s, 5) for d, k in prof.kinds.items()},
           "cpu_during_stream": cpu,
           "whole_model_s": {d: round(sum(k.layer_time_s[workload].values()), 4) for d, k in prof.kinds.items()}}
    _say(f"  CPU while streaming: {cpu}")
    _say(f"  predicted {row['predicted_ips']} IPS, measured {row['measured_ips']} (overall {row['overall_ips']}): "
         f"ratio {row['ratio']}; outputs {'EQUAL' if row['equal'] else 'DIFFERENT'}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", nargs="*", default=list(workloads.NAMES), choices=workloads.NAMES)
    ap.add_argument("--devices", nargs="*", type=int, default=[2, 4])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=None, help="frames per stream [default: per workload]")
    ap.add_argument("--depth", type=int, default=None,
                    help="frames in flight [default: the stream's own, 2 x devices, at least 4]")
    args = ap.parse_args()
    rows = []
    for name in args.workload:
        for n in args.devices:
            rows.append(one(name, n, args.repeats, args.frames or FRAMES[name], args.depth))
    result = {"bench": "local_prediction", "target": "measured within 15% of predicted", "rows": rows,
              "all_within_15pct": all(r["within_15pct"] for r in rows)}
    results_dir().mkdir(parents=True, exist_ok=True)
    (results_dir() / "local_prediction.json").write_text(json.dumps(result, indent=2) + "\n")
    _say(f"{'workload':8} {'n':>2} {'predicted':>9} {'measured':>9} {'ratio':>6}  bottleneck")
    for r in rows:
        _say(f"{r['workload']:8} {r['devices']:>2} {r['predicted_ips']:>9} {r['measured_ips']!s:>9} "
             f"{r['ratio']!s:>6}  {r['bottleneck']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
