"""mcdask's Prometheus series, created in the scheduler process so the scheduler's stock
``/metrics`` (which serves ``prometheus_client.REGISTRY``) shows them beside Dask's own.

The series are made once per process and reused: a plugin registered again (every deploy
registers it) must not register them twice (``Duplicated timeseries``). Without
``prometheus_client`` everything here is a no-op.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("mcdask.dashboard.metrics")

#: latency histogram buckets, seconds (a Pi farm answers in 0.5-5 s, a local cluster in 0.05-0.5 s)
BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)

_SERIES: dict[str, Any] | None = None


def series() -> dict[str, Any] | None:
    """name -> metric, made on first use; None without prometheus_client."""
    global _SERIES
    if _SERIES is not None:
        return _SERIES
    try:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram
    except ImportError:
        return None
    specs = [
        ("mcdask_frames", Counter, "Frames answered by all streams, by status", ["status"], {}),
        ("mcdask_frame_latency_seconds", Histogram, "Latency of frames answered ok", [], {"buckets": BUCKETS}),
        ("mcdask_ips", Gauge, "Frames classified per second, summed over live streams", [], {}),
        ("mcdask_frames_in_flight", Gauge, "Frames read but not yet answered, over live streams", [], {}),
        ("mcdask_device_utilisation", Gauge, "CPU use of the worker bound to each plan device (1 = one core)",
         ["device"], {}),
        ("mcdask_device_memory_bytes", Gauge, "Process memory of the worker bound to each plan device",
         ["device"], {}),
        ("mcdask_devices", Gauge, "Devices in the deployed plan", ["plan"], {}),
    ]
    out: dict[str, Any] = {}
    existing = getattr(REGISTRY, "_names_to_collectors", {})
    for name, kind, doc, labels, kw in specs:
        key = name + ("_total" if kind is Counter else "")
        if key in existing:   # made by an earlier copy of this module (e.g. reloaded)
            out[name] = existing[key]
            continue
        try:
            out[name] = kind(name, doc, labels, **kw)
        except ValueError as e:
            logger.debug("mcdask: metric %s not registered (%s)", name, e)
            return None
    _SERIES = out
    return out


def observe(figures: dict, previous: dict | None) -> None:
    """Count what one publish adds over the stream's previous publish."""
    s = series()
    if s is None:
        return
    before = (previous or {}).get("frames", {})
    for status, n in figures.get("frames", {}).items():
        delta = int(n) - int(before.get(status, 0))
        if delta > 0:
            s["mcdask_frames"].labels(status=status).inc(delta)
    for lat in figures.get("new_latencies", ()):
        s["mcdask_frame_latency_seconds"].observe(float(lat))


def refresh(snapshot: dict) -> None:
    """Set the gauges from a state snapshot (``mcdask.dashboard.state.snapshot``)."""
    s = series()
    if s is None:
        return
    live = [st for st in snapshot.get("streams", []) if st.get("live")]
    s["mcdask_ips"].set(sum(st.get("ips") or 0.0 for st in live))
    s["mcdask_frames_in_flight"].set(sum(st.get("in_flight") or 0 for st in live))
    for name in ("mcdask_device_utilisation", "mcdask_device_memory_bytes", "mcdask_devices"):
        s[name].clear()
    dep = snapshot.get("deployment")
    if not dep:
        return
    s["mcdask_devices"].labels(plan=dep["plan_id"]).set(len(snapshot.get("devices", [])))
    for d in snapshot.get("devices", []):
        s["mcdask_device_utilisation"].labels(device=d["device"]).set(d.get("utilisation") or 0.0)
        s["mcdask_device_memory_bytes"].labels(device=d["device"]).set(d.get("memory_bytes") or 0)
