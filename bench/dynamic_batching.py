"""``python -m bench.dynamic_batching``: a live stream under overload, with dynamic batching at K = 1, 2, 4, 8.

One ``dask scheduler`` and three ``dask worker`` processes on loopback (``bench.soak``'s
``LocalProcesses``, one TensorFlow thread each) run the planner's AlexNet plan. First the
swarm's capacity at one frame per task is measured on a backlog; then synthetic frames come as a
camera would, at ``--overload`` times that rate, and the stream drops what it cannot take
(``--overload drop``, as ``mcdask run`` does for a camera). Every K goes through the same path
(``mcdask.streaming.dynamic.DynamicBatcher``), so each frame's latency runs from when the source
gave it, its wait in the queue included; the K values are interleaved within each repeat so
drift in the host's load touches them alike. Results, every repeat and the medians, go to
``dynamic-batching.json``, with the issue's latency test for each K: the rise of p99 latency
over K = 1 against ``--max-wait-ms`` plus one batch's service time on a device. Under overload
every device is busy all the time, so a batch's service time is what the stream's own rate
gives: devices x mean batch / IPS.

``--farm N`` runs it on an emulated farm of N pi3 devices instead (``bench.batching.bench_cluster``;
``--time-scale``, ``--backend``), planned for the devices' live memory and runtime; the result
goes to ``dynamic-batching-farm-nN[-BACKEND].json`` with the farm's settings and IPS at Pi speed.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import click

from bench.provenance import OUT_DIR_HELP, provenance, results_dir


def one_run(client, plan, frames: int, k: int, wait_s: float, fps: float | None) -> dict:
    """``frames`` synthetic AlexNet frames through ``plan`` with batches of up to ``k``; at
    ``fps`` with drops (None: a backlog, as fast as the swarm takes them)."""
    import workloads
    from mcdask.commands import stream_through
    from mcdask.runtime.weights import WeightsSource
    from mcdask.streaming.dynamic import DynamicBatcher
    from mcdask.streaming.sources import Feeder, latest, open_source, opened, paced

    w = workloads.get("alexnet")
    raw = opened(open_source("synthetic", w))
    if fps:
        raw = latest(paced(raw, fps))   # the batcher keeps up to K more waiting
    batcher = DynamicBatcher(w, k, wait_s)
    _, s = stream_through(client, plan, Feeder(w).items(raw, frames), WeightsSource(), None, None, False, frames,
                          keep="nothing", batcher=batcher)
    if s.get("stopped") or s.get("errors"):
        raise click.ClickException(f"K={k}: the stream did not run cleanly: {s.get('stopped') or s.get('errors')}")
    return {"ips": round(s["ips"], 3), "classified": s["classified"], "dropped": s["frames"] - s["classified"],
            "latency_p50_s": s["latency_p50_s"], "latency_p99_s": s["latency_p99_s"], "mean_batch": s["mean_batch"],
            "wall_s": round(s["wall_s"], 3)}


@click.command()
@click.option("--frames", type=click.IntRange(20), default=300, show_default=True, help="frames per run")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--batch-sizes", default="1,2,4,8", show_default=True, help="comma separated")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True)
@click.option("--overload", type=click.FloatRange(min=1), default=2.0, show_default=True,
              help="the source's rate as a multiple of the swarm's capacity at one frame per task")
@click.option("--farm", "farm_n", type=click.IntRange(1, 200), default=None,
              help="instead of 3 local workers, a farm of N pi3 devices (root)")
@click.option("--time-scale", type=float, default=1.0, show_default=True, help="the farm's (--farm)")
@click.option("--backend", type=click.Choice(["tensorflow", "litert"]), default=None,
              help="the devices' runtime (--farm: also the farm's) [default: mcdask.worker.backend]")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=OUT_DIR_HELP)
def main(frames: int, repeats: int, batch_sizes: str, max_wait_ms: float, overload: float, farm_n: int | None,
         time_scale: float, backend: str | None, out_dir: Path | None) -> None:
    """AlexNet on 3 local workers or a farm: IPS and latency of a camera-like stream under overload, per K."""
    import dask
    from distributed import Client

    import workloads
    from mcdask.options import using_backend
    from mcdask.runtime.deploy import worker_names
    from mcdask.streaming.controller import configured_runtime, plan_book
    from mcdask.streaming.fit import live_memory

    from .batching import bench_cluster

    if farm_n is None and time_scale != 1.0:
        raise click.UsageError("--time-scale is for --farm runs")
    ks = [int(k) for k in batch_sizes.split(",")]
    runs: dict[str, list[dict]] = {str(k): [] for k in ks}
    with tempfile.TemporaryDirectory(prefix="mcdask-dynamic-") as tmp, \
            bench_cluster(Path(tmp), farm_n, time_scale, backend) as (address, farm_status), using_backend(backend), \
            dask.config.set({"distributed.comm.compression": dask.config.get("mcdask.compression")}), \
            Client(address, timeout="60s") as client:
        memory = min(live_memory(client).values()) if farm_n else None
        plan = plan_book(workloads.get("alexnet"), None, memory, configured_runtime(backend)).plan_for(
            tuple(worker_names(client)))
        one_run(client, plan, 40, 1, 0.0, None)   # deploy and warm up
        capacity = statistics.median(one_run(client, plan, frames, 1, 0.0, None)["ips"] for _ in range(2))
        fps = overload * capacity
        click.echo(f"capacity at one frame per task: {capacity:.2f} IPS; the source gives {fps:.2f} fps", err=True)
        for r in range(repeats):
            for k in ks:
                runs[str(k)].append(one_run(client, plan, frames, k, max_wait_ms / 1e3, fps))
                x = runs[str(k)][-1]
                click.echo(f"repeat {r + 1}/{repeats} K={k}: {x['ips']} IPS, p99 "
                           f"{x['latency_p99_s'] * 1e3:.0f} ms, mean batch {x['mean_batch']}", err=True)
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("ips", "latency_p50_s", "latency_p99_s", "mean_batch")}
           for k, v in runs.items()}
    base = med[str(ks[0])]
    devices = farm_n or 3
    service = {k: devices * m["mean_batch"] / m["ips"] for k, m in med.items()}
    rise = {k: m["latency_p99_s"] - base["latency_p99_s"] for k, m in med.items()}
    bound = {k: max_wait_ms / 1e3 + service[k] for k in med}
    result = {"workload": "alexnet", "workers": devices, "frames": frames, "repeats": repeats,
              "max_wait_ms": max_wait_ms,
              "capacity_k1_ips": capacity, "source_fps": round(fps, 3), "median": med,
              "ips_vs_k1": {k: round(m["ips"] / base["ips"], 3) for k, m in med.items()},
              "p99_above_k1_s": {k: round(v, 4) for k, v in rise.items()},
              "batch_service_s": {k: round(v, 4) for k, v in service.items()},
              "p99_rise_bound_s": {k: round(v, 4) for k, v in bound.items()},
              "p99_rise_within_bound": {k: rise[k] <= bound[k] for k in med},
              "runs": runs, "plan": plan.to_dict(),
              **provenance({"frames": frames, "repeats": repeats, "batch_sizes": batch_sizes,
                            "max_wait_ms": max_wait_ms, "overload": overload, "farm": farm_n,
                            "time_scale": time_scale, "backend": backend})}
    name = "dynamic-batching"
    if farm_status is not None:
        result["median_ips_pi_speed"] = {k: round(m["ips"] / time_scale, 3) for k, m in med.items()}
        result["farm"] = {k: farm_status.get(k) for k in ("mode", "cpu_capped", "network_shaped", "time_scale",
                                                            "backend", "calibration", "verification")}
        name = f"dynamic-batching-farm-n{farm_n}" + (f"-{backend}" if backend else "")
    path = results_dir(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    for size, m in med.items():
        click.echo(f"K={size}: median {m['ips']:6.2f} IPS ({result['ips_vs_k1'][size]:.2f}x K=1), p50 "
                   f"{m['latency_p50_s'] * 1e3:6.0f} ms, p99 {m['latency_p99_s'] * 1e3:6.0f} ms, mean batch "
                   f"{m['mean_batch']}; p99 {rise[size] * 1e3:+.0f} ms over K={ks[0]}, bound "
                   f"{bound[size] * 1e3:.0f} ms (T + one batch's {service[size] * 1e3:.0f} ms of service)")
    click.echo(f"written {path}")


if __name__ == "__main__":
    main()
