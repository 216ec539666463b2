"""Time whole-model or per-slice inference in this process (median of repeated runs).

``python -m mcdask.runtime.timing --workload alexnet --json`` prints, as its last stdout line, a JSON
object with ``median_s``: one whole-model inference on one frame. The farm uses it to
calibrate CPU quotas; the profiler uses ``time_call`` per layer.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import click


def time_call(fn: Callable[[], object], repeats: int = 10, warmup: int = 2,
              budget_s: float | None = None) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` calls; stops early past ``budget_s``."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if budget_s is not None and time.perf_counter() - start > budget_s and len(out) >= 3:
            break
    return out


def whole_model(workload: str, intra_op: int | None = 1) -> Callable[[], None]:
    """A zero-argument function running one frame through the whole workload (windowed
    stages included) in this process, with ``intra_op`` TensorFlow threads."""
    import workloads
    from mcdask.model.plan import single_device
    from mcdask.runtime.slices import Slice, SliceSpec, set_threads

    set_threads(intra_op)
    w = workloads.get(workload)
    slices = [Slice(SliceSpec(w.name, st.start, st.end)) for st in single_device(w).stages]
    feeds = [s.example_feeds() for s in slices]

    def once() -> None:
        for s, f in zip(slices, feeds):
            s(f)

    return once


def whole_model_times(workload: str, repeats: int = 10, warmup: int = 2, intra_op: int | None = 1) -> list[float]:
    """Per-frame seconds of the whole workload (median over ``repeats`` is what callers use)."""
    return time_call(whole_model(workload, intra_op), repeats, warmup)


@click.command()
@click.option("--workload", default="alexnet", show_default=True)
@click.option("--repeats", default=10, show_default=True)
@click.option("--threads", default=1, show_default=True, help="TensorFlow intra-op threads")
@click.option("--json", "as_json", is_flag=True)
def main(workload: str, repeats: int, threads: int, as_json: bool) -> None:
    times = whole_model_times(workload, repeats, intra_op=threads)
    result: dict[str, Any] = {"workload": workload, "median_s": statistics.median(times), "min_s": min(times),
              "repeats": len(times), "threads": threads}
    click.echo(json.dumps(result) if as_json else
               f"{workload}: median {result['median_s'] * 1e3:.1f} ms over {len(times)} runs")


if __name__ == "__main__":
    main()
