"""``python -m bench.task_floor``: what one Dask task costs the client and the scheduler here,
with nothing of mcdask in it: the floor under ``runtime_share_of_frame_time``.

A stock local cluster (``bench.soak.LocalProcesses``: one ``dask scheduler`` and three ``dask
worker`` processes on loopback). The client submits one task per frame that returns at once,
its argument a frame as the stream sends one (AlexNet's 227 x 227 x 3 uint8, 155 kB, or
nothing), with at most ``DEPTH`` in flight, and reads each result, as ``mcdask run`` does:

- ``paced``: at ``--ips`` frames a second (AlexNet on 6 devices runs at about 12.5), for
  ``--seconds``: the client's and the scheduler's CPU seconds per frame, and their share of the
  frame interval;
- ``flat_out``: back to back, as fast as the cluster answers: the cost per task when the
  processes' periodic work (heartbeats, monitors) is spread over many tasks;
- ``idle``: the same processes with no task, per second: what any stream pays whatever its rate.

Each case runs ``--repeats`` times on one cluster; the JSON (``bench/results/task-floor.json``)
holds every run and the medians.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import deque
from pathlib import Path

import click
import numpy as np
import psutil

from .provenance import OUT_DIR_HELP, provenance, results_dir

DEPTH = 14
FRAME = (227, 227, 3)


def _cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _answer(x):
    return 0


def run_case(client, scheduler: psutil.Process, payload: bool, ips: float | None, seconds: float) -> dict:
    """One run: frames at ``ips`` a second (None: back to back) for ``seconds``."""
    frame = np.zeros(FRAME, np.uint8) if payload else None
    me = psutil.Process()
    pending: deque = deque()
    c0, s0, t0 = _cpu_s(me), _cpu_s(scheduler), time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        if ips:
            time.sleep(max(0.0, t0 + n / ips - time.perf_counter()))
        pending.append(client.submit(_answer, frame, pure=False, priority=-n))
        n += 1
        while len(pending) >= DEPTH:
            pending.popleft().result(timeout=60)
    while pending:
        pending.popleft().result(timeout=60)
    wall = time.perf_counter() - t0
    client_s, scheduler_s = (_cpu_s(me) - c0) / n, (_cpu_s(scheduler) - s0) / n
    rate = n / wall
    return {"frames": n, "ips": rate, "client_cpu_s_per_frame": client_s, "scheduler_cpu_s_per_frame": scheduler_s,
            "share_of_frame_time": (client_s + scheduler_s) * rate}


def idle(scheduler: psutil.Process, seconds: float) -> dict:
    me = psutil.Process()
    c0, s0 = _cpu_s(me), _cpu_s(scheduler)
    time.sleep(seconds)
    return {"client_cpu_s_per_s": (_cpu_s(me) - c0) / seconds,
            "scheduler_cpu_s_per_s": (_cpu_s(scheduler) - s0) / seconds}


@click.command()
@click.option("--ips", default=12.5, show_default=True, help="frames a second of the paced case")
@click.option("--seconds", default=20.0, show_default=True, help="length of each run")
@click.option("--repeats", default=3, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=OUT_DIR_HELP)
def main(ips: float, seconds: float, repeats: int, out_dir: Path | None) -> None:
    """Client and scheduler CPU per Dask task, on stock processes, with no model."""
    from distributed import Client

    from bench.soak import LocalProcesses

    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="mcdask-task-floor-") as folder:
        cluster = LocalProcesses(Path(folder), {})
        cluster.start()
        try:
            with Client(cluster.address, timeout="60s") as client:
                cluster.wait_for_workers(client)
                scheduler = psutil.Process(cluster.pids()["scheduler"])
                run_case(client, scheduler, True, None, 3.0)   # warm: connections, imports
                for rep in range(repeats):
                    for case, payload, rate in (("paced", True, ips), ("paced_empty", False, ips),
                                                ("flat_out", True, None), ("flat_out_empty", False, None)):
                        runs.setdefault(case, []).append(run_case(client, scheduler, payload, rate, seconds))
                    runs.setdefault("idle", []).append(idle(scheduler, seconds))
                    click.echo(f"repeat {rep + 1}/{repeats} done", err=True)
        finally:
            cluster.close()
    medians = {case: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for case, rs in runs.items()}
    spread = {case: {k: [min(r[k] for r in rs), max(r[k] for r in rs)] for k in rs[0]} for case, rs in runs.items()}
    result = {"medians": medians, "range": spread, "runs": runs,
              **provenance({"ips": ips, "seconds": seconds, "repeats": repeats, "depth": DEPTH,
                            "frame_bytes": int(np.prod(FRAME)), "workers": 3})}
    path = results_dir(out_dir) / "task-floor.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    for case, m in medians.items():
        if case == "idle":
            click.echo(f"{case:15s} client {m['client_cpu_s_per_s'] * 1e3:5.1f} ms/s  "
                       f"scheduler {m['scheduler_cpu_s_per_s'] * 1e3:5.1f} ms/s")
        else:
            click.echo(f"{case:15s} {m['ips']:6.1f} frames/s  client {m['client_cpu_s_per_frame'] * 1e3:5.2f} ms  "
                       f"scheduler {m['scheduler_cpu_s_per_frame'] * 1e3:5.2f} ms per frame  "
                       f"{m['share_of_frame_time']:.1%} of the frame interval")
    click.echo(f"written {path}")


if __name__ == "__main__":
    main()
