"""Time whole-model or per-slice inference in this process.

``sustained_mean`` is the statistic the farm calibrates on and the profiler records: the mean
time per call over calls made back to back for a while. Under a CFS quota a single call can
run inside one period's quota at full speed and read many times too fast; only a run spanning
many periods shows the rate the quota allows, the rate a stream of frames gets.

``python -m mcdask.runtime.timing --workload alexnet --json`` prints, as its last stdout line, a JSON
object with ``median_s``: one whole-model inference on one frame, on this host with no quota
(the farm's open-loop share comes from it; ``--backend litert`` times LiteRT's, which a litert
farm calibrates against). ``--relative-to tensorflow`` also gives ``ratio``: the backend's time
over TensorFlow's, from ``interleaved`` blocks of calls of each (this host's speed swings 2.1x
over 1-s windows and 1.7x over 3-s ones, ``bench/results/host-noise.json``; two medians taken a
few seconds apart inherit that swing, blocks a quarter of a second apart cancel it).
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
    """Seconds per call of ``fn`` after ``warmup`` calls; stops early past ``budget_s``. For
    code with no CPU quota (this host): under a quota use ``sustained_mean``."""
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


def sustained_mean(fn: Callable[[], object], *, min_calls: int = 3, min_s: float = 1.0,
                   max_s: float | None = None, warmup: int = 1,
                   clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Mean seconds per call of ``fn`` called back to back, after ``warmup`` calls (also back
    to back, so timing starts in the steady state): calls go on until there are at least
    ``min_calls`` and ``min_s`` seconds have passed, or ``max_s`` seconds and two calls.
    ``mean_s`` is the elapsed time over the calls (every call's glue included, as a stream
    runs them); the single calls' extremes are kept to show the spread."""
    if min_calls < 1 or min_s < 0 or warmup < 0 or (max_s is not None and max_s <= 0):
        raise ValueError(f"need min_calls >= 1, min_s >= 0, warmup >= 0, max_s > 0 or None; got {min_calls}, "
                         f"{min_s}, {warmup}, {max_s}")
    for _ in range(warmup):
        fn()
    fastest, slowest, calls = float("inf"), 0.0, 0
    start = t0 = clock()
    while calls < min_calls or t0 - start < min_s:
        if max_s is not None and calls >= 2 and t0 - start >= max_s:
            break
        fn()
        t1 = clock()
        fastest, slowest, calls = min(fastest, t1 - t0), max(slowest, t1 - t0), calls + 1
        t0 = t1
    elapsed = t0 - start
    return {"mean_s": elapsed / calls, "calls": calls, "elapsed_s": elapsed, "fastest_s": fastest,
            "slowest_s": slowest}


def interleaved(a: Callable[[], object], b: Callable[[], object], seconds: float = 10.0,
                block_s: float = 0.25, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """``a`` and ``b`` called back to back in alternating blocks of about ``block_s`` each until
    ``seconds`` have passed (at least one block of each): each one's mean seconds per call over
    all its blocks, and ``ratio``, ``b``'s over ``a``'s. A swing of the host's speed slower
    than a block pair lands on both alike and divides out of the ratio."""
    if seconds <= 0 or block_s <= 0:
        raise ValueError(f"need seconds > 0 and block_s > 0; got {seconds}, {block_s}")
    spent, calls = [0.0, 0.0], [0, 0]
    start = clock()
    while clock() - start < seconds or not all(calls):
        for i, fn in enumerate((a, b)):
            t0 = t = clock()
            while t - t0 < block_s or calls[i] == 0:
                fn()
                t = clock()
                calls[i] += 1
            spent[i] += t - t0
    mean_a, mean_b = spent[0] / calls[0], spent[1] / calls[1]
    return {"a_mean_s": mean_a, "b_mean_s": mean_b, "ratio": mean_b / mean_a, "a_calls": calls[0],
            "b_calls": calls[1]}


def litert_flatbuffers(workload: str = "alexnet") -> list[str]:
    """The files of the whole workload's LiteRT flatbuffers, one per stage of its single-device
    plan, converted in this process (it needs TensorFlow) into the client's cache; the farm's
    devices read them there."""
    import workloads
    from mcdask.model.plan import single_device
    from mcdask.runtime.convert import flatbuffer_path
    from mcdask.runtime.pieces import SliceSpec

    w = workloads.get(workload)
    return [str(flatbuffer_path(SliceSpec(w.name, st.start, st.end, backend="litert")))
            for st in single_device(w).stages]


def whole_model(workload: str, intra_op: int | None = 1, backend: str = "tensorflow",
                flatbuffers: list[str] | None = None) -> Callable[[], None]:
    """A zero-argument function running one frame through the whole workload (windowed
    stages included) in this process: on TensorFlow with ``intra_op`` threads, or on LiteRT
    (XNNPACK, one thread) from ``flatbuffers``, one file per stage of the single-device plan
    (default: converted here, which needs TensorFlow)."""
    import workloads
    from mcdask.model.plan import single_device
    from mcdask.runtime.pieces import SliceSpec

    w = workloads.get(workload)
    stages = single_device(w).stages
    if backend == "litert":
        from pathlib import Path

        from mcdask.runtime.litert import LiteSlice

        specs = [SliceSpec(w.name, st.start, st.end, backend="litert") for st in stages]
        if flatbuffers is None:
            flatbuffers = litert_flatbuffers(workload)
        if len(flatbuffers) != len(specs):
            raise ValueError(f"{workload} has {len(specs)} stages; got {len(flatbuffers)} flatbuffers")
        slices: list = [LiteSlice(spec, Path(path)) for spec, path in zip(specs, flatbuffers)]
    else:
        from mcdask.runtime.slices import Slice, set_threads

        set_threads(intra_op)
        slices = [Slice(SliceSpec(w.name, st.start, st.end)) for st in stages]
    feeds = [s.example_feeds() for s in slices]

    def once() -> None:
        for s, f in zip(slices, feeds):
            s(f)

    return once


@click.command()
@click.option("--workload", default="alexnet", show_default=True)
@click.option("--repeats", default=10, show_default=True)
@click.option("--threads", default=1, show_default=True, help="TensorFlow intra-op threads")
@click.option("--backend", type=click.Choice(["tensorflow", "litert"]), default="tensorflow", show_default=True,
              help="litert: LiteRT with XNNPACK, one thread, on flatbuffers converted here")
@click.option("--relative-to", type=click.Choice(["tensorflow", "litert"]), default=None,
              help="also time the model on this backend, in blocks interleaved with --backend's, and give "
                   "the ratio of --backend's time to its")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="with --relative-to: how long the interleaved blocks run")
@click.option("--json", "as_json", is_flag=True)
def main(workload: str, repeats: int, threads: int, backend: str, relative_to: str | None, seconds: float,
         as_json: bool) -> None:
    model = whole_model(workload, threads, backend)
    times = time_call(model, repeats, warmup=2)
    result: dict[str, Any] = {"workload": workload, "median_s": statistics.median(times), "min_s": min(times),
                              "repeats": len(times), "threads": threads, "backend": backend}
    if relative_to:
        r = interleaved(whole_model(workload, threads, relative_to), model, seconds)
        result.update(relative_to=relative_to, ratio=r["ratio"], interleaved_s=seconds,
                      statistic="mean over alternating blocks of back-to-back calls of each")
    click.echo(json.dumps(result) if as_json else
               f"{workload}: median {result['median_s'] * 1e3:.1f} ms over {len(times)} runs"
               + (f", {result['ratio']:.3f} x {relative_to}'s time" if relative_to else ""))


if __name__ == "__main__":
    main()
