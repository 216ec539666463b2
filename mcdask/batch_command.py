"""``mcdask batch``: classify a whole dataset (a folder, a video, a glob of images) on a running
scheduler, K frames per task, one JSON line per frame in ``--out``, resumable.

The job itself is ``mcdask.streaming.batch``; the batch size comes from
``mcdask.planning.batching``. With ``--json`` the last line of stdout is one JSON object.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import click

import workloads
from mcdask import options
from mcdask.errors import EXIT_STOPPED, McdaskError, StreamStopped
from mcdask.model.plan import Plan
from mcdask.output import finish
from mcdask.security.tls import tls_options


def batch_size_option(ctx, param, value: str) -> int | None:
    """``auto`` -> None; else a whole number of frames >= 1."""
    if value == "auto":
        return None
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise click.BadParameter(f"{value!r} is neither auto nor a whole number of frames >= 1", ctx, param)
    return k


def _check_out(out: str, resume: bool) -> int:
    """Frames ``--out`` already holds with ``--resume`` (a torn last line cut off); without it,
    ``--out`` must not hold results already."""
    from mcdask.streaming.batch import resume_point

    if resume:
        return resume_point(out)
    if Path(out).is_file() and Path(out).stat().st_size:
        raise click.ClickException(f"--out {out} already holds results: add --resume to finish that job, "
                                   "or remove the file")
    return 0


def _progress(total: int | None, done: int, enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("frames"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[ips]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True,
                   disable=not enabled, console=Console(stderr=True))
    return bar, bar.add_task("frames", total=total, completed=done, ips="")


def run_job(client, plan: Plan, items, k: int, weights, out: str, start: int, total: int | None, *,
            depth: int | None = None, plans=None, progress: bool = True) -> dict:
    """Deploy ``plan``, classify ``items`` (frames ``start``.. of the source) in batches of
    ``k``, append one line per frame to ``out`` a batch at a time; returns the summary.
    ``summary["stopped"]`` says why a job ended early (the scheduler lost, no plan fits)."""
    from mcdask.output import quiet
    from mcdask.streaming.batch import batch_depth, frame_records, lines_of
    from mcdask.streaming.records import Tally
    from mcdask.streaming.session import Session

    depth = batch_depth(plan, depth)
    session = Session(client, plan, weights, depth=depth, plans=plans, batch=k)
    w = workloads.get(plan.workload)
    labels, tally, stopped, interrupted = workloads.labels(plan.workload), Tally(), None, False
    bar, task = _progress(total, start, progress and not quiet())
    pending: list = []
    with open(out, "a") as f, bar:
        t0 = time.perf_counter()
        try:
            for rec in frame_records(session, w, items, k, depth):
                tally.add(rec)
                rec.output = None
                pending.append(rec)
                if len(pending) >= k or rec.status != "ok":
                    f.write(lines_of(pending, labels, t0))
                    f.flush()
                    bar.advance(task, len(pending))
                    pending.clear()
                    wall = time.perf_counter() - t0
                    bar.update(task, ips=f"{tally.counts['ok'] / wall:.1f} IPS" if wall > 0 else "")
        except StreamStopped as e:
            stopped = str(e)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            f.write(lines_of(pending, labels, t0))   # complete records: each line whole
            wall = time.perf_counter() - t0
    summary = tally.summary(wall)
    summary.update({"batch_size": k, "depth": depth, "resumed_from": start, "deploy_s": round(session.deploy_s, 3),
                    "plan_id": plan.id, "final_plan_id": session.stream.plan.id,
                    "switches": session.controller.switches if session.controller else 0,
                    "events": session.events.to_list(), "weights": session.deployment.weights.describe(),
                    "backend": session.deployment.backend})
    if stopped:
        summary["stopped"] = stopped
    if interrupted:
        summary["stopped"] = "interrupted"
    return summary


@click.command()
@tls_options
@options.scheduler
@options.workload(required=True)
@click.option("--source", required=True,
              help="what to classify: a folder of images, a video file, a glob of images ('photos/*.jpg'), "
                   "or synthetic (with --frames)")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="results: one JSON line per frame, in frame order (as `mcdask run --out`)")
@click.option("--batch-size", "k", default="auto", show_default=True, callback=batch_size_option,
              help="frames per task, or auto: the size with the best predicted throughput that fits every "
                   "device's memory")
@click.option("--resume", is_flag=True, help="finish the job --out holds: skip the frames it already has")
@click.option("--frames", type=click.IntRange(1), default=None, help="only the first N frames of the source")
@click.option("--plan", "plan_opt", default=None,
              help="a plan file or a packaged plan's name [default: the planner's plan for the workers]")
@click.option("--profile", default=None, help="a built-in device kind or a profile file to plan with [default: pi3]")
@click.option("--adapt/--no-adapt", default=True, show_default=True,
              help="move to the plan for the devices there are when devices leave, freeze or join")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a .keras / .weights.h5 file present at the same path on every device")
@click.option("--seed", default=0, show_default=True, help="seed of the default weights")
@click.option("--depth", type=click.IntRange(1), default=None,
              help="batches in flight [default: two per device, each computing one with its next on it; "
                   "a killed job redoes at most that many]")
@options.backend
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON on the last stdout line")
def batch(scheduler, workload, source, out, k, resume, frames, plan_opt, profile, adapt, weights, seed, depth,
          backend, as_json):
    """Classify SOURCE in batches of frames on the workers of a running scheduler.

    Exit status: 0 done; 1 bad input or the plan could not be deployed; 3 the job stopped
    early (scheduler lost, Ctrl-C): --out holds every frame answered before, in order, and
    the same command with --resume finishes it."""
    import dask

    from mcdask.commands import connect
    from mcdask.output import show_events_on_stderr
    from mcdask.planning.batching import batch_size_for
    from mcdask.runtime.deploy import bind, worker_names
    from mcdask.runtime.history import client_config
    from mcdask.runtime.weights import WeightsSource
    from mcdask.streaming.batch import refuse_windowed
    from mcdask.streaming.controller import configured_runtime, plan_book
    from mcdask.streaming.fit import check_fits, for_live_devices
    from mcdask.streaming.sources import Feeder, frame_count, open_source, opened

    show_events_on_stderr()
    w = workloads.get(workload)
    if source.startswith("camera:"):
        raise click.UsageError("batch mode reads a dataset; a camera is a live source: use `mcdask run`")
    if source == "synthetic" and frames is None:
        raise click.UsageError("synthetic frames never end: give --frames N")
    try:
        refuse_windowed(w)
        start = _check_out(out, resume)
        total = min(filter(None, (frames, frame_count(source))), default=None)
        if total is not None and start >= total:
            finish({"workload": workload, "source": source, "out": str(Path(out)), "frames": 0, "classified": 0,
                     "resumed_from": start}, as_json, [f"{out} already holds all {total} frames: nothing to do"])
            return
        wsrc = WeightsSource(seed, weights).check()
        book = plan_book(w, profile, runtime=configured_runtime(backend))
        raw = opened(open_source(source, w, seed))
        with dask.config.set({"distributed.comm.compression": dask.config.get("mcdask.compression"),
                              **client_config()}), options.using_backend(backend), connect(scheduler) as client:
            names = worker_names(client)
            if not names:
                raise click.ClickException(f"no workers at {scheduler}; start `dask worker {scheduler}` on each device")
            # plan for the smallest device's memory and the largest runtime; refuse a plan that does not fit
            book, memory = for_live_devices(client, w, profile, configured_runtime(backend))
            if plan_opt:
                from mcdask.plans import resolve

                plan = resolve(plan_opt).validate(w)
            else:
                plan = book.plan_for(tuple(names))
            check_fits(w, plan, book.profile(plan.devices), bind(plan, names), memory)
            choice = batch_size_for(w, plan, book.profile(plan.devices), k)
            k = choice.k
            feeder = Feeder(w)
            items = (feeder.item(i, r) for i, r in enumerate(itertools.islice(raw, frames)) if i >= start)
            summary = run_job(client, plan, items, k, wsrc, out, start, total, depth=depth,
                              plans=book if adapt else None, progress=not as_json)
    except McdaskError as e:
        raise click.ClickException(str(e)) from e
    summary = {"workload": workload, "devices": len(plan.devices), "source": source, "out": str(Path(out)),
               "prediction": choice.to_dict(), **summary, "plan": plan.to_dict()}
    held = start + summary["frames"]
    finish(summary, as_json, [f"plan {plan.id} for {len(plan.devices)} devices, {k} frames per task: "
                               f"{summary['classified']} frames classified in {summary['wall_s']:.2f} s, "
                               f"{summary['ips']:.2f} IPS; {out} holds {held} frames"])
    if summary.get("stopped"):
        click.echo(f"mcdask: stopped ({summary['stopped']}) with {held} frames in {out}; the same command with "
                   "--resume finishes the job", err=True)
        sys.exit(EXIT_STOPPED)

