"""``python -m bench.host_noise``: how steady this host's speed is, by the window it is averaged over.

One thread runs whole AlexNet back to back (``mcdask.runtime.timing.whole_model``, no quota,
nothing else asked of the host) for ``--seconds``; the calls' end times are cut into windows of
each ``--windows`` length, and each window's mean seconds per call is one sample of the host's
speed. Per window length: the median, the least and the most, and most over least: the spread
any measurement that long inherits from the host alone, whatever it measures. A farm device's
calibration round, a profile's piece and a bench row are such windows (``bench.row_length``).
The last stdout line is the JSON also written to ``host-noise.json`` in the results folder.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import click

from .provenance import OUT_DIR_HELP, provenance, results_dir


def windows(ends: list[float], length: float, total: float) -> list[float]:
    """Mean seconds per call in each whole window of ``length`` seconds of ``[0, total)``, from
    the calls' end times ``ends`` (sorted, seconds from the start); windows with no call end
    are left out."""
    out, i = [], 0
    for k in range(int(total // length)):
        start, stop, n = k * length, (k + 1) * length, 0
        while i < len(ends) and ends[i] < stop:
            n += ends[i] >= start
            i += 1
        if n:
            out.append(length / n)
    return out


def spread(samples: list[float]) -> dict:
    return {"windows": len(samples), "median_s": statistics.median(samples), "min_s": min(samples),
            "max_s": max(samples), "max_over_min": max(samples) / min(samples)}


@click.command()
@click.option("--seconds", type=click.FloatRange(min=10), default=120.0, show_default=True)
@click.option("--windows", "lengths", default="1,3,10,30", show_default=True, help="window lengths, seconds")
@click.option("--backend", type=click.Choice(["tensorflow", "litert"]), default="tensorflow", show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=OUT_DIR_HELP)
def main(seconds: float, lengths: str, backend: str, out_dir: Path | None) -> None:
    """Whole AlexNet on one thread, back to back: the spread of its speed per window length."""
    from mcdask.runtime.timing import whole_model

    try:
        sizes = sorted({float(x) for x in lengths.split(",")})
    except ValueError:
        raise click.BadParameter(f"{lengths!r}: expected seconds, comma separated (e.g. 1,3,10,30)") from None
    if not sizes or sizes[0] <= 0 or sizes[-1] > seconds:
        raise click.BadParameter(f"{lengths!r}: each window must be > 0 and at most --seconds ({seconds:g})")
    call = whole_model("alexnet", intra_op=1, backend=backend)
    for _ in range(3):
        call()
    ends: list[float] = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        call()
        ends.append(time.perf_counter() - t0)
    by_window = {f"{w:g}": spread(windows(ends, w, seconds)) for w in sizes}
    result = {"workload": "alexnet", "backend": backend, "threads": 1, "seconds": seconds, "calls": len(ends),
              "windows": by_window,
              **provenance({"seconds": seconds, "windows": sizes, "backend": backend})}
    path = results_dir(out_dir) / "host-noise.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    for w, s in by_window.items():
        click.echo(f"{w:>4s} s windows ({s['windows']:3d}): {s['min_s'] * 1e3:6.1f} to {s['max_s'] * 1e3:6.1f} ms "
                   f"a call, median {s['median_s'] * 1e3:6.1f}: max/min {s['max_over_min']:.2f}", err=True)
    click.echo(json.dumps({k: result[k] for k in ("backend", "calls", "windows")}))


if __name__ == "__main__":
    main()
