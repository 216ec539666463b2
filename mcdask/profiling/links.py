"""Links between workers and from the client: real transfers of several sizes, fitted by least
squares to ``latency_s + bytes / bandwidth_Bps``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable

from mcdask.errors import ProfileError
from mcdask.model.fit import line
from mcdask.model.profile import LinkModel
from mcdask.profiling import Progress
from mcdask.profiling.worker import consume, payload

#: payload sizes of the link measurements, bytes (1 kB .. 4 MB)
LINK_SIZES = (1_000, 16_000, 256_000, 1_000_000, 4_000_000)


def fit_link(points: Iterable[tuple[float, float]]) -> LinkModel:
    """Least-squares ``t = latency_s + bytes / bandwidth_Bps`` through the median of the
    (bytes, seconds) points of each size, latency clamped at 0 (then the line through the origin).
    The medians keep one stalled transfer (a pause of the host) from tilting the line."""
    raw = [(float(n), float(t)) for n, t in points]
    if len({n for n, _ in raw}) < 2:
        raise ProfileError(f"fitting a link needs points of at least two payload sizes; got {raw}")
    by_size: dict[float, list[float]] = {}
    for n, t in raw:
        by_size.setdefault(n, []).append(t)
    pts = [(n, statistics.median(ts)) for n, ts in sorted(by_size.items())]
    slope, latency = line(pts)
    if latency < 0:
        latency, slope = 0.0, sum(n * t for n, t in pts) / sum(n * n for n, _ in pts)
    if slope <= 0:  # time does not grow with size (noise): the slowest rate seen, bounded
        slope = max(t / n for n, t in pts if n > 0)
    return LinkModel(latency_s=latency, bandwidth_Bps=1 / slope)


def medians(samples: dict[int, list[float]]) -> list[list[float]]:
    return [[n, statistics.median(ts)] for n, ts in sorted(samples.items())]




def measure_links(client, workers: dict[str, dict], sizes: Iterable[int] = LINK_SIZES, repeats: int = 3,
                  progress: Progress | None = None) -> tuple[dict[tuple[str, str], dict[int, list[float]]],
                                                             dict[str, dict[int, list[float]]]]:
    """Transfer samples: ``{(a, b): {bytes: [s, ...]}}`` for unordered worker pairs (both
    directions pooled, ``a < b`` by name order) and ``{worker: {bytes: [s, ...]}}`` from the client."""
    from distributed import get_task_stream, wait

    sizes = sorted(set(int(n) for n in sizes))
    names = list(workers)
    pairs: dict[tuple[str, str], dict[int, list[float]]] = {}
    if len(names) > 1:
        consumers: dict[str, tuple[tuple[str, str], int]] = {}
        with get_task_stream(client) as stream:
            run = 0
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    if progress:
                        progress(f"link {a} <-> {b}")
                    for src, dst in ((a, b), (b, a)):
                        # the first transfer of each direction opens the connection: not kept
                        for j, n in enumerate([sizes[0]] + [n for n in sizes for _ in range(repeats)]):
                            run += 1
                            p = client.submit(payload, n, run, workers=[workers[src]["address"]], pure=False,
                                              key=f"mcdask-profile-payload-{run}")
                            wait(p)
                            c = client.submit(consume, p, workers=[workers[dst]["address"]], pure=False,
                                              key=f"mcdask-profile-consume-{run}")
                            got = c.result()
                            if got != n:
                                raise ProfileError(f"link {src}->{dst}: sent {n} bytes, {got} arrived")
                            if j:
                                consumers[c.key] = ((a, b), n)
                            del p, c
            time.sleep(0.1)   # the task stream's last records arrive on the scheduler's batch cycle
        by_key = {r["key"]: r for r in stream.data}   # filled when the context closes
        for key, (pair, n) in consumers.items():
            rec = by_key.get(key)
            if rec is None:
                raise ProfileError(f"the task stream lost the record of {key}; rerun the profile")
            spans = [s["stop"] - s["start"] for s in rec["startstops"] if s["action"] == "transfer"]
            if not spans:
                raise ProfileError(f"{key} on {rec.get('worker')} shows no transfer: was it placed on the "
                                   f"producer's worker? (startstops {rec['startstops']})")
            pairs.setdefault(pair, {}).setdefault(n, []).append(sum(spans))
    from_client: dict[str, dict[int, list[float]]] = {}
    for name in names:
        if progress:
            progress(f"link client -> {name}")
        addr = [workers[name]["address"]]
        samples: dict[int, list[float]] = {}
        for j, n in enumerate([sizes[0]] + [n for n in sizes for _ in range(repeats)]):
            x = payload(n, j)
            t0 = time.perf_counter()
            f = client.scatter(x, workers=addr, direct=True, hash=False)
            dt = time.perf_counter() - t0
            del f
            if j:
                samples.setdefault(n, []).append(dt)
        from_client[name] = samples
    return pairs, from_client
