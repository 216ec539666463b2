"""A stream's figures kept as records come (``Tally``): counts, latency percentiles from a
bounded sketch within its stated error, steady IPS and the longest gap exact."""

from __future__ import annotations

import numpy as np
import pytest

from mcdask.streaming.records import Record, Tally, longest_gap_s, steady_ips


def records(n: int, seed: int = 0) -> list[Record]:
    """``n`` answers, completing out of order (as frames in flight do), a few errors and drops."""
    rng = np.random.default_rng(seed)
    done = np.cumsum(rng.exponential(0.05, n)) + rng.normal(0, 0.03, n)
    out = []
    for i in range(n):
        if i % 97 == 5:
            out.append(Record(i, "error", error="bad frame"))
        elif i % 89 == 7:
            out.append(Record(i, "dropped"))
        else:
            out.append(Record(i, "ok", latency_s=float(rng.lognormal(-1.5, 0.6)), done_at=float(done[i]),
                              attempts=2 if i % 50 == 0 else 1))
    return out


def test_latency_percentiles_within_the_sketch_error():
    recs = records(20_000)
    summary = Tally.of(recs).summary(wall_s=100.0)
    lat = np.array([r.latency_s for r in recs if r.status == "ok"])
    for q, key in ((50, "latency_p50_s"), (99, "latency_p99_s")):
        exact = np.percentile(lat, q, method="lower")
        assert summary[key] == pytest.approx(exact, rel=Tally.LATENCY_RELATIVE_ERROR + 1e-9)


def test_the_sketch_stays_small_however_long_the_stream():
    tally = Tally.of(records(20_000))
    buckets = len(tally.latency._store.bins)
    assert 0 < buckets <= 2048


def test_counts_steady_ips_and_longest_gap_are_exact():
    recs = records(5_000, seed=3)
    s = Tally.of(recs).summary(wall_s=250.0)
    ok = [r for r in recs if r.status == "ok"]
    done = sorted(r.done_at for r in ok)
    steady = done[int(len(done) * 0.2):]
    assert s["ips_steady"] == pytest.approx(np.polyfit(steady, np.arange(len(steady)), 1)[0], rel=1e-9)
    assert s["longest_gap_s"] == round(max(b - a for a, b in zip(done, done[1:])), 4)
    assert s["frames"] == 5_000 and s["classified"] == len(ok) and s["ips"] == len(ok) / 250.0
    assert s["errors"] == sum(r.status == "error" for r in recs) > 0
    assert s["dropped"] == sum(r.status == "dropped" for r in recs) > 0
    assert s["resubmitted"] == sum(r.attempts > 1 for r in recs) > 0


def test_steady_ips_counts_waves_at_their_rate():
    """Nine replicas answering nine frames at once every 7 s run at 9/7 answers a second,
    within 2 % though the fill cut-off falls mid-wave (first-to-last read 1.36, 5.5 % over)."""
    done = [7.0 * wave + 0.01 * k for wave in range(1, 9) for k in range(9)]
    assert steady_ips(done) == pytest.approx(9 / 7, rel=0.02)
    assert steady_ips([5.0, 5.0, 5.0, 5.0]) is None


def test_nothing_classified_gives_no_figures():
    s = Tally.of([Record(0, "error", error="x"), Record(1, "warmup")]).summary(wall_s=1.0)
    assert s["latency_p50_s"] is None and s["ips_steady"] is None and s["longest_gap_s"] is None
    assert steady_ips([]) is None and longest_gap_s([1.0]) is None
