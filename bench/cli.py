"""``mcdask bench`` (also ``python -m bench``): the farm beside the Pi farm and the Jetson TX2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

import workloads
from bench.provenance import OUT_DIR_HELP
from bench.row_length import MIN_SECONDS
from mcdask.planning.planner import TOP_WITHIN
from mcdask.security.tls import tls_options


def parse_devices(text: str) -> tuple[int, ...]:
    """``"1-4,6,8"`` -> (1, 2, 3, 4, 6, 8)."""
    out: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise click.BadParameter(f"{part!r}: expected N or A-B, comma separated (e.g. 1-6,8)")
        a, b = int(m[1]), int(m[2] or m[1])
        if a < 1 or b < a:
            raise click.BadParameter(f"{part!r}: need 1 <= A <= B")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


@click.command()
@tls_options
@click.option("-w", "--workload", "names", type=click.Choice(workloads.NAMES), multiple=True,
              help="repeat for several [default: all three]")
@click.option("-n", "--devices", default=None, help="device counts, e.g. 1-12 or 2,4,6 [default: 1-12; quick: 1,2,4,6]")
@click.option("--quick", is_flag=True, help="AlexNet on 1, 2, 4, 6 devices at time scale 4: about a minute "
                   "(a 2-core host, its conv/dense split cached)")
@click.option("--time-scale", type=float, default=None,
              help="devices K times faster with K times the bandwidth [default: 1; quick: 4]")
@click.option("--strategy", "strategies", type=click.Choice(["optimal", "paper"]), multiple=True,
              help="planner strategies to compare [default: optimal]")
@click.option("--profile", type=click.Choice(["farm", "device", "pi3"]), default=None,
              help="plan on times measured piece by piece on a farm device under its quotas (device: TensorFlow's "
                   "pieces, so tensorflow farms only), on the Pi 3's layer times rebalanced to this host's "
                   "conv/dense split (farm), or on the published Pi 3 ones [default: each backend's own, device "
                   "on tensorflow and farm on litert; quick: farm]")
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="measure up to K distinct plans per row, the planner's and its runners-up predicted within "
                   "--within of it, and report the winner (the row's figures), each candidate and won_by")
@click.option("--within", type=click.FloatRange(0, 1, max_open=True), default=TOP_WITHIN, show_default=True,
              metavar="F",
              help="with --top: runners-up predicted at least (1 - F) x the best plan's IPS")
@click.option("--frames", type=click.IntRange(min=8), default=None, metavar="N",
              help="frames per row for every workload, at least (see --min-seconds) [default: AlexNet and action 100, "
                   "VGG16 24; quick: 80/16]")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=None, metavar="S",
              help="stream each row at least S seconds at its predicted rate, reusing the frames in turn (this "
                   "host's speed swings 1.7x over 3-s windows and 1.3x over 30-s ones: bench.row_length) "
                   f"[default: {MIN_SECONDS:g}; quick: 0]")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True, metavar="R",
              help="measure each plan R times; the row is the median run's, with every run's IPS and the spread")
@click.option("--scheduler", default=None, help="use a farm that is already up (its scheduler address)")
@click.option("--name", "--out", "name", default=None,
              help="result file stem [default: bench for a full run, bench-quick for --quick; a partial run "
                   "is named after its workloads and devices and may not take those names]")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=OUT_DIR_HELP)
@click.option("--soak", "soak_frames", type=click.IntRange(100), default=None, metavar="FRAMES",
              help="instead: stream FRAMES AlexNet frames through 3 local workers and measure whether the "
                   "client's, the scheduler's and the workers' memory stays flat (full run: 20000)")
@click.option("--backend", "backends", type=click.Choice(["tensorflow", "litert"]), multiple=True,
              help="how the devices run their slices; repeat for both, measured one after the other in one "
                   "run and one result, each on a farm brought up for it [default: mcdask.worker.backend]")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON on the last stdout line")
def bench(names, devices, quick, time_scale, strategies, profile, top, within, frames, min_seconds, repeats,
          scheduler, name,
          out_dir, backends, as_json, soak_frames):
    """Measure WORKLOADs on an emulated pi3 farm for each device count, beside the predictions
    and the published Pi-farm and Jetson TX2 figures."""
    if soak_frames is not None:
        return run_soak(soak_frames, name, out_dir, as_json)
    from . import report
    from .backend_runs import check, run_backends
    from .provenance import PartialRunError, provenance, result_name, results_dir
    from .run import DEFAULT_FRAMES, QUICK_FRAMES, Settings

    backends = tuple(dict.fromkeys(backends))
    try:
        check(backends, profile, scheduler)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    default_profile = "farm" if quick else None   # None: each backend's own (bench.backend_runs.default_profile)
    settings = Settings(
        workloads=tuple(names) or (("alexnet",) if quick else workloads.NAMES),
        devices=parse_devices(devices) if devices else ((1, 2, 4, 6) if quick else tuple(range(1, 13))),
        strategies=tuple(strategies) or ("optimal",),
        time_scale=time_scale or (4.0 if quick else 1.0),
        frames=(dict.fromkeys(workloads.NAMES, frames) if frames
                else QUICK_FRAMES if quick else DEFAULT_FRAMES),
        profile=profile or default_profile,
        top=top,
        within=within,
        repeats=repeats,
        min_seconds=(0.0 if quick else MIN_SECONDS) if min_seconds is None else min_seconds,
    )
    full = (not names and not devices and time_scale is None and not backends and top == 1 and frames is None
            and profile in (None, default_profile) and repeats == 1 and min_seconds is None)
    partial = (f"bench-{'-'.join(settings.workloads)}-n{devices or 'all'}".replace(",", "_")
               + (f"-{'-'.join(backends)}" if backends else "") + (f"-top{top}" if top > 1 else "")
               + (f"-f{frames}" if frames else "") + (f"-{profile}" if profile not in (None, default_profile) else "")
               + (f"-r{repeats}" if repeats > 1 else "") + (f"-s{min_seconds:g}" if min_seconds is not None else ""))
    try:
        stem = result_name("bench-quick" if quick else "bench", full, name, partial)
    except PartialRunError as e:
        raise click.UsageError(str(e)) from None
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    try:
        result = run_backends(settings, backends, scheduler=scheduler, log=log)
    except RuntimeError as e:  # a farm that cannot give these rows
        raise click.ClickException(str(e)) from None
    result["provenance"] = provenance()
    files = report.write(result, results_dir(out_dir), name=stem)
    log(report.markdown(result))
    log(f"written: {files['markdown']}, {files['json']}, {', '.join(files['plots'])}")
    if as_json:
        rows = [{k: r.get(k) for k in ("workload", "devices", "backend", "ips", "ips_pi_speed", "latency_p50_s",
                                        "latency_p99_s", "predicted_ips", "strategy", "efficiency", "feasible")
                                        + (("winner", "planner_choice", "won_by") if top > 1 else ())
                                        + (("ips_median", "ips_spread") if repeats > 1 else ())}
                for r in result["rows"]]
        click.echo(json.dumps({"rows": rows, "files": files, "settings": result["settings"]}))


def run_soak(frames: int, name: str | None, out_dir: Path | None, as_json: bool) -> None:
    """``--soak FRAMES``: the memory soak (``bench.soak``); writes NAME.json and NAME.png."""
    from . import soak
    from .provenance import PartialRunError, provenance, result_name, results_dir

    try:
        stem = result_name("soak", frames == soak.FULL_FRAMES, name, f"soak-{frames}")
    except PartialRunError as e:
        raise click.UsageError(str(e)) from None
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    try:
        result = soak.soak(frames, log=log)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    result["provenance"] = provenance({"frames": frames, "workers": soak.WORKERS})
    folder = results_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    soak.plot(result, folder / f"{stem}.png")
    for line in soak.lines(result):
        log(line)
    log(f"written: {folder / f'{stem}.json'}, {folder / f'{stem}.png'}")
    if as_json:
        click.echo(json.dumps({k: result[k] for k in ("frames", "growth", "flat", "out_file")}))
