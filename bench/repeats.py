"""``mcdask bench --repeats R``: measure each plan R times on the same farm and profile.

One run of a row is one sample of a noisy host, so a figure quoted alone cannot say how far
the next run would land. Each repeat deploys the plan again and streams the same frames; the
row keeps the run whose IPS is the median's (the lower middle for an even R) with every
figure it measured, and adds ``runs`` (each run's IPS, latency and efficiency), ``ips_median``
and ``ips_spread`` ((max - min) / median of the runs' IPS at Pi speed).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

#: each repeat's figures kept in the row's ``runs``, as the row names them
KEPT = ("ips_pi_speed", "latency_p50_s", "latency_p99_s", "measured_over_predicted", "bottleneck_busy", "errors")


def combine(rows: list[dict]) -> dict:
    """The row for runs ``rows`` of one plan (module docstring)."""
    if not rows:
        raise ValueError("need at least one measured run")
    ips = [r["ips_pi_speed"] for r in rows]
    middle = sorted(range(len(rows)), key=lambda i: (ips[i], i))[(len(rows) - 1) // 2]
    median = statistics.median(ips)
    row = dict(rows[middle])
    row.update(runs=[{k: r.get(k) for k in KEPT} for r in rows], ips_median=median,
               ips_spread=(max(ips) - min(ips)) / median if median else None)
    return row


def measure_repeated(plan, measure: Callable[[object], dict], repeats: int, log=print) -> dict:
    """``measure(plan)`` ``repeats`` times and :func:`combine` them (one run: its row as it is)."""
    if repeats == 1:
        return measure(plan)
    rows = []
    for i in range(repeats):
        rows.append(measure(plan))
        log(f"      run {i + 1}/{repeats}: {rows[-1]['ips_pi_speed']:.2f} IPS at Pi speed")
    row = combine(rows)
    log(f"      median {row['ips_median']:.2f} IPS, spread {row['ips_spread']:.1%} over {repeats} runs")
    return row
