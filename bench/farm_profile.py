"""The planning profile of an emulated farm device: the Pi's layer times, rebalanced between
convolution and dense layers to the split the farm really has.

A farm device runs the model under a CPU quota sized so that whole AlexNet takes its kind's
time (``cluster.farm``). The quota slows every layer by the same factor, so the farm's dense
layers stand to its convolutions as they do on this host: on this host AlexNet's dense layers
take 70 % of its time, on the Pi's published profile (``mcdask.model.kinds.pi3``) 57 %. Planning
the farm on the Pi's profile gives it the Pi's optimum, not the farm's.

``host_split`` times, on this host with one thread, each workload cut into runs of dense and of
other layers (slices as the runtime builds them; a windowed layer starts its run), on the farm's
backend: TensorFlow, or LiteRT on both of its kernels (each run converted once, then timed on
XNNPACK and on the built-in kernels). ``farm_kind`` keeps the Pi kind's memory and its times
*within* each group, and scales each workload's convolution-side and dense-side layers (and
dense shards, for every shard size the planner may use) so that their sums are this host's,
slowed as the farm slows AlexNet: the farm calibrates each device on its own runtime's whole
AlexNet (``cluster.closed_loop``: TensorFlow's target time, times LiteRT's speed-up over it on a
litert farm, ``runtime_ratio``), so the host's AlexNet on that runtime is what maps to it. On
litert each piece is timed on the kernels the device would run it on
(``mcdask.runtime.pieces.parts``; ``auto``: dense on XNNPACK where the device's memory holds
XNNPACK's second copy of the whole workload's weights, else on the built-in kernels: a profile
has one time per piece, and a device decides on all it holds, so a plan whose devices each hold
a part of VGG16 or the action model, small enough for XNNPACK, runs faster than this predicts).
``python -m bench.farm_profile`` prints the split; ``host_split`` caches it as JSON under
``mcdask.profile.cache-dir`` (keyed by CPU model, backend, TensorFlow and mcdask versions).
"""

from __future__ import annotations

import functools
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

import workloads
from bench.provenance import cpu_model
from mcdask.runtime.pieces import Kernels

SCHEMA = "mcdask.host-split/2"
KERNELS: tuple[Kernels, ...] = ("xnnpack", "builtin")
CALIBRATION_WORKLOAD = "alexnet"
REPEATS = 15


def _group(layer) -> str:
    return "dense" if layer.kind == "dense" else "conv"


def runs(workload) -> list[tuple[int, int]]:
    """``[start, end)`` runs of same-group layers; a windowed layer starts a run."""
    out: list[tuple[int, int]] = []
    for i, layer in enumerate(workload.layers):
        if out and _group(workload.layers[out[-1][0]]) == _group(layer) and not layer.windowed:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _tensorflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-intel"):
        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    return "unknown"


def _cache_path(names: list[str], backend: str = "tensorflow") -> Path:
    from mcdask import __version__
    from mcdask.profiling.cache import cache_dir_default

    key = json.dumps([SCHEMA, sorted(names), backend, cpu_model(), _tensorflow_version(), __version__])
    return cache_dir_default() / f"host-split-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _timers(name: str, a: int, b: int, backend: str) -> dict[str, Callable[[], object]]:
    """Zero-argument calls of the slice of layers ``[a, b)``: ``seconds`` on TensorFlow; on
    LiteRT one per kernel (``xnnpack_s``, ``builtin_s``) over one flatbuffer, converted here."""
    from mcdask.runtime.pieces import SliceSpec

    if backend == "tensorflow":
        from mcdask.runtime.slices import Slice

        s = Slice(SliceSpec(name, a, b))
        return {"seconds": functools.partial(s, s.example_feeds())}
    from mcdask.runtime.convert import flatbuffer_path
    from mcdask.runtime.litert import LiteSlice

    path = flatbuffer_path(SliceSpec(name, a, b, backend="litert"))
    out: dict[str, Callable[[], object]] = {}
    for k in KERNELS:
        lite = LiteSlice(SliceSpec(name, a, b, backend="litert", kernels=k), path)
        out[f"{k}_s"] = functools.partial(lite, lite.example_feeds())
    return out


def measure(names: list[str], repeats: int = REPEATS, log=lambda _m: None, backend: str = "tensorflow") -> dict:
    """In this process (one thread): seconds per frame of each run of each workload (median of
    ``repeats`` calls after 2 warm-up calls), and their sums per group (``conv_s``, ``dense_s``;
    on litert per kernel too: ``conv_xnnpack_s``, ``dense_builtin_s``, ...)."""
    import gc

    from mcdask.runtime.slices import set_threads
    from mcdask.runtime.timing import time_call

    set_threads(1)
    t0 = time.perf_counter()
    out: dict[str, dict] = {}
    for name in dict.fromkeys([CALIBRATION_WORKLOAD, *names]):
        w = workloads.get(name)
        run_recs: list[dict] = []
        group_s = dict.fromkeys(("conv_s", "dense_s") if backend == "tensorflow" else
                                [f"{g}_{k}_s" for g in ("conv", "dense") for k in KERNELS], 0.0)
        for a, b in runs(w):
            group = _group(w.layers[a])
            rec: dict[str, Any] = {"layers": [a, b], "first": w.layers[a].name, "last": w.layers[b - 1].name,
                                   "group": group}
            for field, call in _timers(name, a, b, backend).items():
                rec[field] = statistics.median(time_call(call, repeats, 2))
                key = f"{group}_s" if field == "seconds" else f"{group}_{field}"
                group_s[key] += rec[field]
            if backend != "tensorflow":
                rec["seconds"] = rec["xnnpack_s"]
            run_recs.append(rec)
            log(f"{name} {w.layers[a].name}..{w.layers[b - 1].name} ({group}): "
                + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in rec.items() if k.endswith("_s") or k == "seconds"))
            gc.collect()
        if backend != "tensorflow":
            group_s.update(conv_s=group_s["conv_xnnpack_s"], dense_s=group_s["dense_xnnpack_s"])
        out[name] = {"runs": run_recs, **group_s}
    return {"schema": SCHEMA, "cpu": cpu_model(), "backend": backend, "threads": 1, "repeats": repeats,
            "statistic": f"median of {repeats} calls after 2 warm-up calls, one slice per run of layers",
            "workloads": out, "seconds": round(time.perf_counter() - t0, 1)}


def host_split(names: list[str], log=print, backend: str = "tensorflow") -> dict:
    """Cached ``measure``, run in a fresh process so that its TensorFlow and memory go away."""
    path = _cache_path(names, backend)
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA:
            log(f"host conv/dense split: {path} (cached)")
            return data
    log(f"host conv/dense split: timing {', '.join(names)} on this host ({backend}, one thread)...")
    from cluster.system import run_json

    cmd = [sys.executable, "-m", "bench.farm_profile", "--json", "--backend", backend,
           *[a for n in names for a in ("--workload", n)]]
    data = run_json(cmd, env={"OMP_NUM_THREADS": "1"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    log(f"  timed in {data['seconds']} s; cached in {path}")
    return data


def _dense_kernel(runtime: str, kind, workload) -> str:
    """The kernels a device of ``kind`` on ``runtime`` runs ``workload``'s dense layers on: for
    ``auto``, the device's own rule (``mcdask.runtime.plugin.fast_dense_fits``) on the whole
    workload at its baseline (module docstring)."""
    if runtime in ("litert-xnnpack", "litert-builtin"):
        return runtime.removeprefix("litert-")
    if runtime == "litert-auto":
        from mcdask.runtime.pieces import SliceSpec
        from mcdask.runtime.plugin import fast_dense_fits

        whole = SliceSpec(workload.name, 0, len(workload.layers), backend="litert", kernels="auto")
        return "xnnpack" if fast_dense_fits([whole], kind.baseline_bytes, kind.memory_bytes) else "builtin"
    return "builtin"    # litert-mixed


def farm_kind(base, split: dict, alexnet_s: float, n_devices: int, runtime: str = "tensorflow",
              runtime_ratio: float = 1.0, costs: dict | None = None, runtime_share: float = 0.1):
    """``base`` (the Pi kind, with the farm device's memory and ``runtime``'s baseline) with each
    workload's conv-side and dense-side times scaled to this host's ``split`` (on that runtime),
    slowed as the farm slows the runtime's whole AlexNet to ``alexnet_s`` x ``runtime_ratio``.
    ``costs`` (``bench.farm_calls.farm_costs``, measured on the farm's devices): ``dask``, the
    host CPU seconds of Dask's own work per task, dependency and message, which a device runs at
    its ``runtime_share`` of a host core (``cluster.devices``: a Pi core running Python): the
    kind's runtime costs (``mcdask.model.profile``); ``call``, one call of a piece
    on the devices, less that call's share of the host split, added to each task's compute."""
    from mcdask.profiling.assemble import planner_shard_sizes

    host = split["workloads"]
    a = host[CALIBRATION_WORKLOAD]
    lite = split.get("backend", "tensorflow") == "litert"
    slow = alexnet_s * runtime_ratio / (a["conv_s"] + a["dense_s"])
    conv_kernel = "builtin" if runtime == "litert-builtin" else "xnnpack"
    layer_time: dict[str, dict[str, float]] = {}
    shard_time: dict[str, dict[str, dict[int, float]]] = {}
    factors: dict[str, dict[str, float]] = {}
    for name, rec in host.items():
        w = workloads.get(name)
        pi = {g: sum(base.time_s(name, l) for l in w.layers if _group(l) == g) for g in ("conv", "dense")}
        sums = ({"conv": rec[f"conv_{conv_kernel}_s"], **{f"dense_{k}": rec[f"dense_{k}_s"] for k in KERNELS}}
                if lite else {"conv": rec["conv_s"], "dense": rec["dense_s"]})
        f = {g: t * slow / pi[g.split("_")[0]] if pi[g.split("_")[0]] else 1.0 for g, t in sums.items()}
        factors[name] = f

        dense = f[f"dense_{_dense_kernel(runtime, base, w)}"] if lite else f["dense"]
        layer_time[name] = {l.name: base.time_s(name, l) * (dense if l.kind == "dense" else f["conv"])
                            for l in w.layers}
        for l in w.layers:
            sizes = planner_shard_sizes(l, n_devices)
            if sizes:
                shard_time.setdefault(name, {})[l.name] = {u: base.time_s(name, l, u) * dense for u in sizes}
    how = (f"{base.kind}'s times with each workload's conv-side and dense-side layers scaled to this host's "
           f"split ({split['cpu']}, {split.get('backend', 'tensorflow')}, one thread), slowed {slow:.1f}x as the "
           f"farm slows {runtime}'s AlexNet to {alexnet_s * runtime_ratio:.3f} s; factors "
           f"{json.dumps({n: {g: round(v, 3) for g, v in f.items()} for n, f in factors.items()})}")
    dask_cost, call = (costs or {}).get("dask"), (costs or {}).get("call")
    runtime_costs = {f"runtime_{k}_s": (dask_cost or {}).get(f"{k}_s", 0.0) / runtime_share
                     for k in ("task", "dependency", "receive", "send")}
    call_s = max(call["device_s"] - call["host_s"] * slow, 0.0) if call else 0.0
    seen = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in (dask_cost or {}).items() if k.endswith("_s"))
    dask_how = ("not measured" if dask_cost is None else
                f"Dask's CPU seconds per task, per dependency, per message received and per message sent on the "
                f"farm's workers ({seen}, host CPU) at the devices' runtime share of a host core ({runtime_share:g})")
    call_how = ("not measured" if call is None else
                f"one call of a piece on the farm's devices ({call['device_s'] * 1e3:.2f} ms at Pi speed) less its "
                f"host time slowed as the model is ({call['host_s'] * slow * 1e3:.2f} ms)")
    return replace(base, kind=f"{base.kind}-farm", layer_time_s=layer_time, shard_time_s=shard_time,
                   task_overhead_s=base.task_overhead_s + call_s, **runtime_costs,
                   sources={**base.sources, "layer_time_s": how, "shard_time_s": how, "task_overhead_s": call_how,
                            **dict.fromkeys(runtime_costs, dask_how)},
                   note=f"emulated {base.kind} farm device: {base.kind} memory and per-layer structure, "
                        "the farm's conv/dense balance",
                   measured={"slowdown": slow, "factors": factors, "host_split": split, "runtime": runtime,
                             "runtime_ratio": runtime_ratio, "dask_cost": dask_cost, "call": call, "call_s": call_s})


# --------------------------------------------------------------------------------------------
# measured on a farm device

_PIECE: dict = {}


def build_piece(workload_name: str, index: int, units: int | None, warmup: int = 2, end: int | None = None) -> dict:
    """On a device (its task thread): build one layer, or its first ``units`` units, or with
    ``end`` layers ``index`` to ``end``, unless its build peak would pass the device's memory
    (the cgroup kills, it does not raise)."""
    from mcdask.profiling import worker as profiling
    from mcdask.runtime.pieces import SliceShape
    from mcdask.runtime.slices import Slice, SliceSpec

    drop_piece()
    w = workloads.get(workload_name)
    spec = SliceSpec(workload_name, index, index + 1 if end is None else end, None if units is None else (0, units))
    param = SliceShape(spec).param_bytes
    limit = profiling.cgroup_memory_limit()
    need = profiling.rss_bytes() + profiling.BUILD_PEAK_FACTOR * param
    if limit and need > limit:
        return {"skipped": f"needs about {need / 1e6:,.0f} MB to build; the device has {limit / 1e6:,.0f} MB"}
    s = Slice(spec)
    _PIECE["call"] = functools.partial(profiling.call_piece, s, w, profiling.piece_feeds(s, w))
    for _ in range(warmup):
        _PIECE["call"]()
    return {"built": True}


def time_piece(repeats: int, min_wall_s: float, budget_s: float) -> dict:
    """On a device: seconds per call of the piece ``build_piece`` made, as the sustained mean
    over back-to-back calls lasting at least ``min_wall_s`` (and ``repeats`` calls; at most
    ``budget_s`` once two are done): ``mcdask.runtime.timing.sustained_mean``, as the farm
    calibrates and ``mcdask profile`` measures."""
    from mcdask.runtime.timing import sustained_mean

    r = sustained_mean(_PIECE["call"], min_calls=repeats, min_s=min_wall_s, max_s=budget_s, warmup=1)
    return {"mean_s": r["mean_s"], "runs": r["calls"]}


def drop_piece() -> None:
    from mcdask.runtime.plugin import release_memory

    if _PIECE:
        _PIECE.clear()
        release_memory()


def device_kind(client, addresses: list[str], base, names: list[str], n_devices: int, caps,
                time_scale: float = 1.0, repeats: int = 3, min_wall_s: float = 1.5, budget_s: float = 6.0, log=print):
    """``base`` with layer and shard times measured on the farm devices at ``addresses``: each
    piece built on every one of them with the CPU caps lifted (``caps(False)``), then timed
    under them from each device's task thread, as slices run, all at once (as a stream loads
    them), and the median taken: one device's quota lands within 5-10 % of its target, and a
    profile from one device carried that error to every device's prediction (VGG16 on 11
    devices: its pieces ran 14 % faster than pi3-00 had timed them). Times are divided back to
    Pi speed (x ``time_scale``). A dense layer too big to build whole gets the least-squares
    line through its shards."""
    from mcdask.profiling.assemble import cells, planner_shard_sizes, scale_to_cells, split_call_cost
    from mcdask.profiling.links import fit_link

    def on_each(fn, *args, **kwargs) -> list:
        futures = [client.submit(fn, *args, **kwargs, workers=[a], pure=False, allow_other_workers=False)
                   for a in addresses]
        return [f.result() for f in futures]

    layer_time: dict[str, dict[str, float]] = {}
    shard_time: dict[str, dict[str, dict[int, float]]] = {}
    cell_time: dict[str, dict[tuple[int, int], float]] = {}
    notes: dict[str, str] = {}
    spreads: list[float] = []
    t0 = time.perf_counter()

    def timed(name: str, index: int, units: int | None, end: int | None = None) -> float | None:
        """Seconds per call of a piece at Pi speed, or None (noted) when it cannot be built."""
        caps(False)
        try:
            built = on_each(build_piece, name, index, units, end=end)
        finally:
            caps(True)
        skipped = next((b["skipped"] for b in built if "skipped" in b), None)
        if skipped is not None:
            layers = workloads.get(name).layers
            notes[f"{name}/{layers[index].name}" + ("" if units is None else f"[{units}]")
                  + ("" if end is None else f"..{layers[end - 1].name}")] = skipped
            return None
        times = [r["mean_s"] for r in on_each(time_piece, repeats, min_wall_s, budget_s)]
        median = statistics.median(times)
        spreads.append((max(times) - min(times)) / median if median else 0.0)
        return median * time_scale

    for name in dict.fromkeys(names):
        w = workloads.get(name)
        for i, layer in enumerate(w.layers):
            for units in [None] + planner_shard_sizes(layer, n_devices):
                t = timed(name, i, units)
                if t is None:
                    continue
                if units is None:
                    layer_time.setdefault(name, {})[layer.name] = t
                else:
                    shard_time.setdefault(name, {}).setdefault(layer.name, {})[units] = t
            log(f"  {name} {layer.name}: {layer_time.get(name, {}).get(layer.name, float('nan')):.3f} s"
                + (f" ({len(shard_time[name][layer.name])} shard sizes)" if layer.name in shard_time.get(name, {})
                   else ""))
            if layer.name not in layer_time.get(name, {}):
                shards = sorted(shard_time.get(name, {}).get(layer.name, {}).items())
                if len(shards) < 2:
                    raise RuntimeError(f"{name} layer {layer.name} could not be built on the farm's devices, nor "
                                       f"enough of its shards: {notes}")
                layer_time.setdefault(name, {})[layer.name] = fit_link(shards).time_s(layer.units)
                notes[f"{name}/{layer.name}"] += "; whole time from the line through its shards"
        for a, b in cells(w):
            t = timed(name, a, None, b)
            if t is not None:
                cell_time.setdefault(name, {})[(a, b)] = t
                log(f"  {name} {w.layers[a].name}..{w.layers[b - 1].name} as one slice: {t:.3f} s "
                    f"(its layers: {sum(layer_time[name][x.name] for x in w.layers[a:b]):.3f} s)")
    on_each(drop_piece)
    call_s, layer_time, shard_time = split_call_cost(layer_time, shard_time)
    for name, ct in cell_time.items():
        layer_time[name] = scale_to_cells(workloads.get(name), layer_time[name], ct, call_s)
    log(f"  one call of a piece: {call_s:.4f} s (the fastest layer), counted once per piece")
    how = (f"measured on {len(addresses)} farm devices at once under their CPU quotas, the median over them of "
           f"each one's mean of back-to-back calls of a one-layer slice (at least {repeats} calls and "
           f"{min_wall_s:g} s) from the worker's task thread (built with the caps lifted), x time scale "
           f"{time_scale:g}, less the fastest layer's time ({call_s:.4f} s: one call's fixed cost, counted once "
           f"per piece; mcdask.profiling.assemble.split_call_cost); the layers of each run the planner never cuts "
           f"inside scaled to that run timed as one slice (scale_to_cells)")
    return replace(base, kind=f"{base.kind}-farm-measured", layer_time_s=layer_time, shard_time_s=shard_time,
                   dense_fixed_s=None, dense_s_per_weight_byte=None, task_overhead_s=base.task_overhead_s + call_s,
                   sources={**base.sources, "layer_time_s": how, "shard_time_s": how},
                   note=f"emulated {base.kind} farm device, measured: {base.kind} memory model",
                   measured={"devices": list(addresses), "skipped": notes, "call_s": call_s,
                             "device_spread_median": statistics.median(spreads) if spreads else None,
                             "cells_s": {f"{n}/{a}..{b}": t for n, ct in cell_time.items()
                                         for (a, b), t in ct.items()},
                             "seconds": round(time.perf_counter() - t0, 1)})


@click.command()
@click.option("--workload", "names", type=click.Choice(workloads.NAMES), multiple=True, required=True)
@click.option("--repeats", default=REPEATS, show_default=True)
@click.option("--backend", type=click.Choice(["tensorflow", "litert"]), default="tensorflow", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(names, repeats, backend, as_json) -> None:
    data = measure(list(names), repeats, log=lambda m: click.echo(m, err=True), backend=backend)
    if as_json:
        click.echo(json.dumps(data))
    else:
        for w, rec in data["workloads"].items():
            click.echo(f"{w}: conv side {rec['conv_s'] * 1e3:.2f} ms, dense side {rec['dense_s'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
