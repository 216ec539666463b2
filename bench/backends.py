"""``python -m bench.backends``: the device runtimes side by side, on this host, no farm.

For each runtime (``tensorflow``; ``litert`` with XNNPACK's kernels; ``litert`` with the built-in
ones; ``litert`` with both, ``mixed``: dense layers on the built-in kernels) and each case, a
fresh Python process imports what a device's worker imports (Dask's worker, mcdask's plugin,
the runtime), builds the case's slices (tensorflow: from the seeded weights; litert: loads the
flatbuffers this process converted beforehand, from disk, as a device loads them from its
cache), runs them one thread, and reports:

- ``rss_bytes``: resident memory once built and run: for the ``tiny`` case (AlexNet's conv1
  and pool1, 0.1 MB of weights) this is the resident baseline of a device process; split into
  ``rss_anon_bytes`` and ``rss_file_bytes`` (a flatbuffer's weights read in place are file
  pages, which the system can drop under pressure and read again);
- ``time_per_frame_s``: median of back-to-back calls on one frame (the sum over the case's
  pieces: the action model is its per-frame CNNs plus the pyramid and fc layers);
- ``peak_rss_bytes``: the process's peak resident memory (``VmHWM``);
- ``retained_after_release_bytes``: what the process holds, once it has let go of the slices
  (as at a plan switch), above what it held before building them: the runtime's state a first
  build leaves (TensorFlow's traced functions and kernels), which a device's baseline carries
  from then on;
- ``build_peak_over_weights``: the peak resident memory while building or loading the slices
  and running them once, above what the process held before, divided by their weight bytes
  (meaningless for ``tiny``'s 0.1 MB).

Cases: ``tiny``, ``alexnet`` (whole), ``vgg16-fc1-half`` (units 0..2048 of VGG16's fc1, 25088 x
2048), ``action`` (the whole model on one device). Medians over ``--repeats`` processes each,
written to ``backends.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from bench.provenance import OUT_DIR_HELP, provenance, results_dir

RUNTIMES = {"tensorflow": ("tensorflow", "xnnpack"), "litert-xnnpack": ("litert", "xnnpack"),
            "litert-builtin": ("litert", "builtin"), "litert-mixed": ("litert", "mixed")}
CASES = ("tiny", "alexnet", "vgg16-fc1-half", "action")
#: converted flatbuffers, kept between runs by content key (a run converts only what is new)
FLATBUFFERS = Path(tempfile.gettempdir()) / "mcdask-bench-flatbuffers"


def specs_of(case: str) -> list:
    """The slices of a case (``mcdask.runtime.pieces.SliceSpec``, seeded weights)."""
    import workloads
    from mcdask.model.plan import single_device
    from mcdask.runtime.pieces import SliceSpec

    if case == "tiny":
        return [SliceSpec("alexnet", 0, 2)]
    if case == "vgg16-fc1-half":
        i = workloads.get("vgg16").index["fc1"]
        return [SliceSpec("vgg16", i, i + 1, (0, 2048))]
    w = workloads.get(case)
    return [SliceSpec(case, st.start, st.end) for st in single_device(w).stages]


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _rss_parts() -> dict[str, int]:
    """Resident memory by kind (``/proc/self/status``): anonymous (the heap: TensorFlow's
    variables, XNNPACK's repacked weights) and file-backed (a flatbuffer opened by path: pages
    the system can drop and read again)."""
    fields = {"RssAnon:": "rss_anon_bytes", "RssFile:": "rss_file_bytes"}
    rows = [line.split() for line in Path("/proc/self/status").read_text().splitlines()]
    return {fields[r[0]]: int(r[1]) * 1024 for r in rows if r and r[0] in fields}


def _peak() -> int:
    """This process's peak resident memory since the last ``_reset_peak`` (``VmHWM``: unlike
    ``ru_maxrss``, not inherited from the parent that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def one(runtime: str, case: str, folder: Path, calls: int) -> dict:
    """Measure one runtime on one case in this (fresh) process; see the module docstring."""
    from dataclasses import replace

    import distributed.worker  # noqa: F401  (what a device's process holds: Dask's worker)

    import mcdask.runtime.plugin  # noqa: F401
    from mcdask.runtime.convert import content_key

    backend, kernels = RUNTIMES[runtime]
    if backend == "tensorflow":
        from mcdask.runtime.slices import Slice, ensure_tf

        ensure_tf(1)

        def build(spec):
            return Slice(spec)
    else:
        from mcdask.runtime.litert import load

        def build(spec):
            return load(replace(spec, backend="litert", kernels=kernels),
                        lambda part: folder / f"{content_key(part)}.tflite")
    specs = specs_of(case)
    import_peak = _peak()
    _reset_peak()
    before = _rss()
    pieces = []
    for spec in specs:
        piece = build(spec)
        piece.warm_up()
        pieces.append(piece)
    built_peak = _peak()
    weights = sum(p.param_bytes for p in pieces)
    per_frame = 0.0
    for piece in pieces:
        feeds = piece.example_feeds()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            piece(feeds)
            times.append(time.perf_counter() - t0)
        per_frame += statistics.median(times)
    out = {"runtime": runtime, "case": case, "weight_bytes": weights, "rss_before_build_bytes": before,
           "rss_bytes": _rss(), **_rss_parts(), "peak_rss_bytes": max(import_peak, _peak()),
           "time_per_frame_s": per_frame,
           "build_peak_over_weights": (built_peak - before) / weights}
    del piece, pieces   # as a plan switch lets go of them (mcdask.runtime.plugin.release_memory)
    mcdask.runtime.plugin.release_memory()
    released = _rss()
    return {**out, "rss_released_bytes": released, "retained_after_release_bytes": released - before}


def convert_all(folder: Path) -> dict[str, int]:
    """Every case's flatbuffers into ``folder`` as ``<content key>.tflite``; their sizes."""
    from dataclasses import replace

    from mcdask.runtime.convert import content_key, to_flatbuffer
    from mcdask.runtime.pieces import parts

    sizes = {}
    for case in CASES:
        for spec in specs_of(case):
            for part in [spec, *parts(replace(spec, backend="litert", kernels="mixed"))]:
                path = folder / f"{content_key(part)}.tflite"
                if not path.exists():
                    path.write_bytes(to_flatbuffer(part))
                sizes[part.key] = path.stat().st_size
    return sizes


def _child(runtime: str, case: str, folder: Path, calls: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MALLOC_TRIM_THRESHOLD_": "65536"}
    p = subprocess.run([sys.executable, "-m", "bench.backends", "--one", runtime, case, "--folder", str(folder),
                        "--calls", str(calls)], capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        raise click.ClickException(f"{runtime} {case} failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--repeats", default=3, show_default=True, help="fresh processes per runtime and case")
@click.option("--calls", default=20, show_default=True, help="timed calls per piece in each process")
@click.option("--one", nargs=2, default=None, hidden=True)
@click.option("--folder", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=OUT_DIR_HELP)
def main(repeats: int, calls: int, one: tuple[str, str] | None, folder: Path | None, out_dir: Path | None) -> None:
    """Resident baseline, time per frame, peak memory and build peak of each device runtime."""
    if one:
        assert folder is not None
        click.echo(json.dumps(globals()["one"](*one, folder, calls)))
        return
    folder = FLATBUFFERS
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sizes = convert_all(folder)
    convert_s = time.perf_counter() - t0
    click.echo(f"{len(sizes)} slices ({sum(sizes.values()) / 1e6:.0f} MB) converted or found in {convert_s:.0f} s",
               err=True)
    runs: dict[str, dict[str, list[dict]]] = {r: {c: [] for c in CASES} for r in RUNTIMES}
    for rep in range(repeats):
        for case in CASES:
            for runtime in RUNTIMES:   # interleaved, so the host's load touches them alike
                runs[runtime][case].append(_child(runtime, case, folder, calls))
        click.echo(f"repeat {rep + 1}/{repeats} done", err=True)
    fields = ("rss_bytes", "rss_anon_bytes", "rss_file_bytes", "peak_rss_bytes", "time_per_frame_s",
              "build_peak_over_weights", "retained_after_release_bytes")
    medians = {r: {c: {f: statistics.median(x[f] for x in runs[r][c]) for f in fields} | {
        "time_per_frame_min_s": min(x["time_per_frame_s"] for x in runs[r][c]),   # the least disturbed run
        "weight_bytes": runs[r][c][0]["weight_bytes"]} for c in CASES} for r in RUNTIMES}
    result = {"medians": medians, "flatbuffer_bytes": sizes, "convert_or_find_s": round(convert_s, 1),
              "load_average": os.getloadavg(), "runs": runs,
              **provenance({"repeats": repeats, "calls": calls, "threads": 1})}
    path = results_dir(out_dir) / "backends.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    for r in RUNTIMES:
        for c in CASES:
            m = medians[r][c]
            click.echo(f"{r:15s} {c:15s} {m['time_per_frame_s'] * 1e3:8.2f} ms  rss {m['rss_bytes'] / 2**20:6.0f} MiB  "
                       f"peak {m['peak_rss_bytes'] / 2**20:6.0f} MiB  build peak {m['build_peak_over_weights']:.2f}x  "
                       f"retained {m['retained_after_release_bytes'] / 2**20:5.1f} MiB")
    click.echo(f"written {path}")


if __name__ == "__main__":
    main()
