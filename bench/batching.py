"""``python -m bench.batching``: batch mode against stream mode on a local stock cluster or a farm.

One ``dask scheduler`` and three ``dask worker`` processes on loopback (``bench.soak``'s
``LocalProcesses``, one TensorFlow thread each) take the same synthetic AlexNet frames through
``mcdask run`` and through ``mcdask batch --batch-size K`` for each K, the modes interleaved
within each repeat so drift in the host's load touches them alike. Each figure is the
command's own IPS (frames classified / wall time of the stream, deployment left out); the
result is every repeat and the medians, in ``batching.json``, with each layer kind's fixed
share of a task measured here first (``fixed_fractions``: what ``mcdask.batch.fixed-fraction``
holds).

``--farm N`` runs the same comparison on an emulated farm of N pi3 devices instead
(``cluster.farm``, root; ``--time-scale``, ``--backend``, ``--workload``): the commands plan for
the devices' live memory, IPS is also given at Pi speed (divided by the time scale), and the
result goes to ``batching-farm-WORKLOAD-nN[-BACKEND].json`` with the farm's settings. An x86 core
under a CPU quota batches differently from a Pi's Cortex-A53, whose dense layers are even more
memory-bound: the farm's gain from batching is this host's, scaled.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from bench.provenance import OUT_DIR_HELP, provenance, results_dir
from bench.soak import MALLOC_ENV, LocalProcesses

ENV = {**MALLOC_ENV, "DASK_MCDASK__WORKER__INTRA_OP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def fixed_fractions(k: int = 8, reps: int = 5) -> dict[str, float]:
    """Per layer kind of AlexNet, the share of its one-frame time paid once per task
    (``mcdask.planning.batching.fit_fixed_fraction``), from each layer's time at 1 and ``k``
    frames here, one TensorFlow thread (as the workers run)."""
    import time

    import workloads
    from mcdask.planning.batching import fit_fixed_fraction
    from mcdask.runtime.slices import Slice, SliceSpec, ensure_tf

    ensure_tf(1)
    w = workloads.get("alexnet")
    totals: dict[str, list[float]] = {}
    for i, layer in enumerate(w.layers):
        piece = Slice(SliceSpec("alexnet", i, i + 1))
        for col, batch in enumerate((1, k)):
            feeds = piece.example_feeds(batch)
            piece(feeds)
            t0 = time.perf_counter()
            for _ in range(reps):
                piece(feeds)
            totals.setdefault(layer.kind, [0.0, 0.0])[col] += (time.perf_counter() - t0) / reps
    return {kind: round(fit_fixed_fraction(t1, tk, k), 3) for kind, (t1, tk) in sorted(totals.items())}


def _command(address: str, mode: str, frames: int, out: Path, workload: str = "alexnet",
             backend: str | None = None) -> list[str]:
    mcdask = str(Path(sys.executable).parent / "mcdask")
    common = ["-s", address, "-w", workload, "--source", "synthetic", "--frames", str(frames), "-o", str(out),
              "--json", *(["--backend", backend] if backend else [])]
    if mode == "run":
        return [mcdask, "-q", "run", *common]
    return [mcdask, "-q", "batch", *common, "--batch-size", mode.removeprefix("batch-")]


def measure(address: str, mode: str, frames: int, workdir: Path, env: dict, workload: str = "alexnet",
            backend: str | None = None, timeout_s: float = 600) -> dict:
    """One run of ``mode`` (``run`` or ``batch-K``): its summary's figures."""
    out = workdir / f"{mode}.jsonl"
    out.unlink(missing_ok=True)
    p = subprocess.run(_command(address, mode, frames, out, workload, backend), env=env, capture_output=True,
                       text=True, timeout=timeout_s)
    if p.returncode != 0:
        raise click.ClickException(f"{mode} failed (exit {p.returncode}): {p.stderr.strip()[-500:]}")
    s = json.loads(p.stdout.strip().splitlines()[-1])
    lines = out.read_text().splitlines()
    if len(lines) != frames:
        raise click.ClickException(f"{mode}: {out} holds {len(lines)} lines for {frames} frames")
    return {"ips": round(s["ips"], 3), "classified": s["classified"], "wall_s": round(s["wall_s"], 3),
            "latency_p50_s": s.get("latency_p50_s"), "prediction": s.get("prediction")}


@contextmanager
def bench_cluster(workdir: Path, farm_n: int | None, time_scale: float,
             backend: str | None) -> Iterator[tuple[str, dict | None]]:
    """(scheduler address, farm status or None): 3 local workers, or a farm of ``farm_n`` pi3 devices."""
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if farm_n is not None:
        from cluster import farm
        from cluster.devices import FarmSpec

        status = farm.up(FarmSpec.uniform(farm_n, "pi3"), time_scale=time_scale, backend=backend or "tensorflow",
                         log=log)
        try:
            yield status["scheduler"], status
        finally:
            farm.down(log=log)
        return
    from distributed import Client

    cluster = LocalProcesses(workdir, ENV)
    try:
        cluster.start()
        with Client(cluster.address, timeout="60s") as client:
            cluster.wait_for_workers(client)
        yield cluster.address, None
    finally:
        cluster.close()


@click.command()
@click.option("--frames", type=click.IntRange(10), default=400, show_default=True, help="frames per run")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--batch-sizes", default="1,2,4,8", show_default=True,
              help="comma separated; auto: the size `mcdask batch` picks for the plan and memory")
@click.option("--fractions/--no-fractions", default=True, show_default=True,
              help="first measure each layer kind's fixed share of a task here (mcdask.batch.fixed-fraction)")
@click.option("--farm", "farm_n", type=click.IntRange(1, 200), default=None,
              help="instead of 3 local workers, a farm of N pi3 devices (root)")
@click.option("--time-scale", type=float, default=1.0, show_default=True, help="the farm's (--farm)")
@click.option("--backend", type=click.Choice(["tensorflow", "litert"]), default=None,
              help="the devices' runtime (--farm: also the farm's) [default: mcdask.worker.backend]")
@click.option("-w", "--workload", default="alexnet", show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=OUT_DIR_HELP)
def main(frames: int, repeats: int, batch_sizes: str, fractions: bool, farm_n: int | None, time_scale: float,
         backend: str | None, workload: str, out_dir: Path | None) -> None:
    """IPS of `mcdask batch` at each batch size against `mcdask run`, on 3 local workers or a farm."""
    import os

    if farm_n is None and (workload != "alexnet" or time_scale != 1.0):
        raise click.UsageError("--workload and --time-scale are for --farm runs")
    measured = fixed_fractions() if fractions else None
    if measured:
        click.echo(f"fixed share of a task per layer kind, here: {measured}", err=True)

    sizes = [k.strip() for k in batch_sizes.split(",")]
    if any(k != "auto" and not k.isdigit() for k in sizes):
        raise click.BadParameter(f"{batch_sizes!r}: batch sizes are whole numbers or auto", param_hint="--batch-sizes")
    modes = ["run", *(f"batch-{k}" for k in sizes)]
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="mcdask-batching-") as tmp, \
            bench_cluster(Path(tmp), farm_n, time_scale, backend) as (address, farm_status):
        env = {**os.environ, **ENV}
        for r in range(repeats):
            for mode in modes:
                runs[mode].append(measure(address, mode, frames, Path(tmp), env, workload, backend, timeout_s=3600))
                click.echo(f"repeat {r + 1}/{repeats} {mode}: {runs[mode][-1]['ips']} IPS", err=True)
    medians = {m: statistics.median(x["ips"] for x in runs[m]) for m in modes}
    result = {"workload": workload, "workers": farm_n or 3, "frames": frames, "repeats": repeats,
              "median_ips": medians, "fixed_fraction_here": measured,
              "vs_run": {m: round(v / medians["run"], 3) for m, v in medians.items()},
              "runs": runs, **provenance({"frames": frames, "repeats": repeats, "batch_sizes": batch_sizes,
                                          "farm": farm_n, "time_scale": time_scale, "backend": backend})}
    name = "batching"
    if farm_status is not None:
        result["median_ips_pi_speed"] = {m: round(v / time_scale, 3) for m, v in medians.items()}
        result["farm"] = {k: farm_status.get(k) for k in ("mode", "cpu_capped", "network_shaped", "time_scale",
                                                            "backend", "calibration", "verification")}
        name = f"batching-farm-{workload}-n{farm_n}" + (f"-{backend}" if backend else "")
    path = results_dir(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    for m in modes:
        click.echo(f"{m:9s} median {medians[m]:7.2f} IPS ({result['vs_run'][m]:.2f}x run)")
    click.echo(f"written {path}")


if __name__ == "__main__":
    main()
