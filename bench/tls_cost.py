"""What mutual TLS costs: AlexNet on an emulated pi3 farm at Pi speed, farms with and without
``--tls`` in turn (``python -m bench.tls_cost``; results in ``bench/results/tls-cost.json``).

Each run brings a farm up (TLS or plain TCP), measures it with ``mcdask bench --scheduler ADDR
--workload alexnet --devices N`` and takes it down. Every farm gets the same host AlexNet time
(``--host-time-s``, else measured once, by the first farm) and the open-loop compute share it
gives (``--no-verify``), so the farms differ only in TLS. Figures: each run's steady IPS at Pi
speed and latency p50, the host's 1-minute load average before and after it (other work on
the host slows the devices); median and spread per mode.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from .provenance import provenance, results_dir

MODES = ("plain", "tls")
#: host CPU seconds per frame (less sensitive to other load than IPS): the client's and the
#: scheduler's, the devices' Dask threads (comms, TLS, serialisation), the devices' model threads
CPU_KEYS = ("runtime_cpu_s_per_frame", "worker_runtime_cpu_s_per_frame", "worker_compute_cpu_s_per_frame")


def farm_up(devices: int, use_tls: bool, host_time_s: float | None, attempts: int = 3, batch: int = 2) -> dict:
    """``mcdask farm up`` with ``batch`` devices, then ``farm add`` of ``batch`` at a time; the
    farm's status. A busy host can keep a worker importing TensorFlow past its death timeout
    when many start at once: so they start a few at a time, and a failed farm is brought up
    again."""
    up = [sys.executable, "-m", "mcdask.cli", "farm", "up", "--devices", str(min(batch, devices)), "--no-verify"]
    up += ["--tls"] if use_tls else []
    up += ["--host-time-s", str(host_time_s)] if host_time_s else []
    steps = [up] + [[sys.executable, "-m", "mcdask.cli", "farm", "add", "--devices", str(min(batch, devices - k))]
                    for k in range(batch, devices, batch)]
    for attempt in range(1, attempts + 1):
        for cmd in steps:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                break
        else:
            status = subprocess.run([sys.executable, "-m", "mcdask.cli", "farm", "status", "--json"],
                                    capture_output=True, text=True, timeout=120, check=True)
            return json.loads(status.stdout.strip().splitlines()[-1])
        why = next((line for line in p.stderr.splitlines() if "failed" in line), p.stderr[-300:])
        click.echo(f"farm up failed (attempt {attempt} of {attempts}): {why}", err=True)
        farm_down()
    raise click.ClickException(f"farm up failed {attempts} times; last: {why}")


def farm_down() -> None:
    subprocess.run([sys.executable, "-m", "mcdask.cli", "farm", "down"], capture_output=True, text=True,
                   timeout=300, check=True)


def measure(st: dict, devices: int, name: str, out_dir: Path) -> dict:
    """One ``mcdask bench`` row on the farm ``st``."""
    cmd = [sys.executable, "-m", "mcdask.cli", "bench", "--scheduler", st["scheduler"], "--workload", "alexnet",
           "--devices", str(devices), "--name", name, "--out-dir", str(out_dir), "--json"]
    for k, v in (st.get("tls") or {}).items():
        cmd += [f"--tls-{k.replace('_', '-')}", v]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise click.ClickException(f"bench failed: {p.stderr.strip()[-2000:]}")
    row = json.loads(p.stdout.strip().splitlines()[-1])["rows"][0]
    return {k: row[k] for k in ("ips_pi_speed", "latency_p50_s", "latency_p99_s", "predicted_ips", *CPU_KEYS)}


def measure_on_a_new_farm(devices: int, mode: str, host_time_s: float | None, name: str, out_dir: Path, log,
                          attempts: int = 2) -> dict:
    """Farm up, one bench row, farm down; once more if the bench failed (a busy host can make
    a whole stream miss its deadlines). The row has the host's load average before and after."""
    for attempt in range(1, attempts + 1):
        st = farm_up(devices, mode == "tls", host_time_s)
        load = os.getloadavg()[0]
        try:
            row = measure(st, devices, name, out_dir)
        except click.ClickException as e:
            if attempt == attempts:
                raise
            log(f"{name}: {e.message[-300:]}; again on a new farm")
            continue
        finally:
            farm_down()
        return {**row, "host_time_s": st["calibration"]["host_time_s"],
                "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)]}
    raise AssertionError("unreachable")


def cpu_medians(per: dict[str, list[dict]]) -> dict:
    """Per mode, the median of each of ``CPU_KEYS`` over the runs."""
    return {m: {k: round(statistics.median(r[k] for r in per[m]), 5) for k in CPU_KEYS} for m in MODES}


def run(runs: int, devices: int, host_time_s: float | None = None, log=print) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="mcdask-tls-cost-"))
    per: dict[str, list[dict]] = {m: [] for m in MODES}
    for i in range(1, runs + 1):
        for mode in MODES:
            row = measure_on_a_new_farm(devices, mode, host_time_s, f"tls-cost-{mode}-{i}", out_dir, log)
            host_time_s = host_time_s or row["host_time_s"]
            per[mode].append(row)
            log(f"run {i} {mode}: {row['ips_pi_speed']:.2f} IPS, latency p50 {row['latency_p50_s']:.2f} s, "
                f"load {row['load_avg_1m']}")
    ips = {m: [round(r["ips_pi_speed"], 3) for r in per[m]] for m in MODES}
    med = {m: statistics.median(ips[m]) for m in MODES}
    return {"what": f"AlexNet, {devices} emulated pi3 devices at Pi speed (time scale 1); one farm per run, "
                    "plain TCP and mutual TLS (farm up --tls) in turn, the same host time and compute share",
            "command": "python -m bench.tls_cost; per run: mcdask farm up --devices 2 --no-verify [--tls] "
                       "[--host-time-s H], mcdask farm add --devices 2 until N; "
                       "mcdask bench --scheduler ADDR --workload alexnet --devices N "
                       "[--tls-ca-file ... --tls-cert ... --tls-key ...]; mcdask farm down",
            "host_time_s": host_time_s, "ips_pi_speed": ips, "median": med,
            "spread": {m: [min(ips[m]), max(ips[m])] for m in MODES},
            "tls_cost_pct": round(100 * (1 - med["tls"] / med["plain"]), 1),
            "latency_p50_s": {m: [round(r["latency_p50_s"], 3) for r in per[m]] for m in MODES},
            "load_avg_1m_before_after": {m: [r["load_avg_1m"] for r in per[m]] for m in MODES},
            "cpu_s_per_frame_median": cpu_medians(per),
            "predicted_ips": per["plain"][0]["predicted_ips"]}


@click.command()
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--devices", type=click.IntRange(1, 12), default=6, show_default=True)
@click.option("--host-time-s", type=float, default=None,
              help="host AlexNet time for every farm (e.g. bench/results/bench.json's calibration) [default: "
                   "measured by the first farm]")
@click.option("--name", default="tls-cost", show_default=True, help="result file stem in bench/results")
def main(runs: int, devices: int, host_time_s: float | None, name: str) -> None:
    """Measure mutual TLS's cost in IPS on the emulated farm (needs root; brings farms up and down)."""
    result = run(runs, devices, host_time_s, log=lambda m: click.echo(m, err=True))
    result["provenance"] = provenance({"runs": runs, "devices": devices, "host_time_s": host_time_s})
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    click.echo(f"median IPS plain {result['median']['plain']:.2f}, TLS {result['median']['tls']:.2f} "
               f"({result['tls_cost_pct']:+.1f} % cost); written: {path}")


if __name__ == "__main__":
    main()
