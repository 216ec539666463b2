"""``mcdask demo`` and ``mcdask run``: stream frames through a deployed plan.

With ``--json`` the last line of stdout is one JSON object (the summary); everything for
people goes before it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Literal

import click

import workloads
from mcdask import options
from mcdask.errors import EXIT_ERROR, EXIT_STOPPED, McdaskError, StreamStopped
from mcdask.model.plan import Plan
from mcdask.output import finish, nothing_classified, quiet, say, show_events_on_stderr, summary_lines, why_this_plan
from mcdask.security.tls import connect_problem, tls_options
from mcdask.streaming.controller import configured_runtime, plan_book
from mcdask.streaming.reference import check_against_reference


def default_plan(workload, n: int, profile: str = "pi3") -> Plan:
    """The planner's optimal plan for ``n`` devices of a built-in kind (default ``pi3``)."""
    from mcdask.model.kinds import device_names

    return plan_book(workload, profile).plan_for(device_names(profile, n))


def stream_through(client, plan: Plan, items, weights, depth: int | None, out_path: str | None,
                   progress: bool, total: int | None = None, deployment=None, *, plans=None, events=None,
                   keep: Literal["nothing", "records", "outputs"] = "records", batcher=None):
    """Deploy ``plan`` (unless ``deployment`` already holds it), stream ``items`` (any iterable,
    read as it goes), return (records, summary). With ``plans`` (a ``PlanBook``) a controller
    adapts the deployment to devices leaving and joining. ``--out`` lines are written as frames
    complete. A stream that cannot go on ends early with ``summary["stopped"]`` saying why.
    The summary is kept as records come (``Tally``); the records returned are what ``keep``
    says: none (an endless stream's memory stays flat), every record without its output array,
    or every record with it (to compare with the unsplit model afterwards). With ``batcher``
    (a ``mcdask.streaming.dynamic.DynamicBatcher``) the frames that wait go K to a task."""
    from rich.console import Console
    from rich.progress import Progress

    from mcdask.streaming.dynamic import dynamic_depth
    from mcdask.streaming.records import Tally
    from mcdask.streaming.session import Session

    if batcher and depth is None:
        depth = dynamic_depth(plan, batcher.max_batch)
    session = Session(client, plan, weights, depth=depth, plans=plans, events=events, deployment=deployment,
                      batch=batcher.max_batch if batcher else 1)
    total = total if total is not None else getattr(items, "__len__", lambda: None)()
    records, stopped, tally = [], None, Tally()
    labels, last = workloads.labels(plan.workload), None   # class names; the last frame classified
    out = open(out_path, "w") if out_path else contextlib.nullcontext()
    with out as f, Progress(transient=True, disable=not progress or quiet(), console=Console(stderr=True)) as bar:
        task = bar.add_task("frames", total=total)
        t0 = time.perf_counter()
        try:
            answered = session.records(batcher.batches(items) if batcher else items)
            for rec in batcher.records(answered) if batcher else answered:
                tally.add(rec)
                last = rec if rec.status == "ok" else last
                if f:
                    line = rec.to_dict(labels)
                    if rec.done_at is not None:   # when the answer came, in seconds since the stream began
                        line["t_s"] = round(rec.done_at - t0, 4)
                    f.write(json.dumps(line) + "\n")
                    f.flush()
                if keep != "outputs":
                    rec.output = None   # no output array outlives its frame
                if keep != "nothing":
                    records.append(rec)
                bar.advance(task)
        except StreamStopped as e:
            stopped = str(e)
            session.events.emit("stopped", f"stream stopped after {sum(tally.counts.values())} frames: {stopped}")
        finally:
            wall = time.perf_counter() - t0
    summary = tally.summary(wall)
    summary["weights"] = session.deployment.weights.describe()
    summary["backend"] = session.deployment.backend
    if last is not None:
        summary["last"] = {"frame": last.frame, **last.to_dict(labels)["top5"][0]}
    summary.update({"deploy_s": round(session.deploy_s, 3), "depth": session.stream.depth, "plan_id": plan.id,
                    "binding": session.deployment.binding, "final_plan_id": session.stream.plan.id,
                    "switches": session.controller.switches if session.controller else 0,
                    "events": session.events.to_list(), "span": session.span})
    if batcher:
        summary.update(batcher.summary())
    if stopped:
        summary["stopped"] = stopped
    return records, summary


@click.command()
@options.workload("alexnet")
@options.devices(6, "local one-thread workers, one per emulated device")
@click.option("--frames", type=click.IntRange(1), default=None,
              help="frames to stream [default: 60; action: 80, its windows need 35 to fill]")
@click.option("--plan", "plan_file", default=None,
              help="a plan file or a packaged plan's name (e.g. alexnet-6dev) instead of the planner's plan")
@click.option("--source", default="synthetic", show_default=True,
              help="what to classify: synthetic, a video file, a folder of images, or camera:INDEX")
@click.option("--model", "model_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="your own Keras model (.keras: Conv2D, MaxPooling2D, Flatten, Dense) instead of --workload; "
                   "its outputs are also checked against Keras's own predict")
@click.option("--device-memory", default=None,
              help="plan for devices with this much memory (e.g. 400MB) [default: the pi3's 1 GB]")
@options.backend
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON on the last stdout line")
def demo(workload: str, devices: int, frames: int | None, plan_file: str | None, source: str,
         model_file: str | None, device_memory: str | None, backend: str | None, as_json: bool) -> None:
    """Start a local cluster of DEVICES one-thread workers, deploy a plan, stream SOURCE
    (synthetic frames by default), and check every output against the unsplit model."""
    show_events_on_stderr()
    import dask.utils

    from mcdask.api import local_cluster
    from mcdask.model.kinds import device_names
    from mcdask.plans import resolve
    from mcdask.runtime.weights import WeightsSource
    from mcdask.streaming.sources import Feeder, open_source

    try:
        keras_model = None
        if model_file:
            w, keras_model = user_model(model_file)
            workload = w.name
        w = workloads.get(workload)
        frames = frames or (80 if w.max_window > 1 else 60)
        memory = dask.utils.parse_bytes(device_memory) if device_memory else None
        book = plan_book(w, None, memory, configured_runtime(backend))
        plan = resolve(plan_file).validate(w) if plan_file else book.plan_for(device_names("pi3", devices))
        items = list(Feeder(w).items(open_source(source, w), frames))
        weights = WeightsSource(path=str(Path(model_file).resolve())) if model_file else WeightsSource()
        with options.using_backend(backend), local_cluster(len(plan.devices)) as client:
            say(as_json, f"local cluster of {len(plan.devices)} workers; dashboard {client.dashboard_link}",
                 f"the swarm: {client.dashboard_link.rsplit('/', 1)[0]}/mcdask", *why_this_plan(plan, w, memory))
            records, summary = stream_through(client, plan, items, weights, None, None, not as_json,
                                              plans=book, keep="outputs")
        summary.update(check_against_reference(w, items, records, weights))
        if keras_model is not None:
            from mcdask.streaming.reference import against_keras

            keras_check = against_keras(keras_model, w, items, records)
            summary["keras"] = keras_check
            summary["equal"] = summary["equal"] and keras_check["equal"]
    except McdaskError as e:
        raise click.ClickException(str(e)) from e
    summary = {"workload": workload, "devices": len(plan.devices), **summary, "plan": plan.to_dict()}
    finish(summary, as_json, summary_lines(summary, plan, w))
    if why := nothing_classified(summary, plan, w):
        raise click.ClickException(why)
    if not summary["equal"]:
        sys.exit(EXIT_ERROR)


def user_model(path: str):
    """(workload, Keras model) of a user's ``.keras`` file, registered for this process; one
    line naming the file and the layer when mcdask cannot split it."""
    from workloads.keras_model import UnsupportedModel, load

    try:
        w, model = load(path)
    except UnsupportedModel as e:
        raise click.ClickException(f"{path}: {e}") from None
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{path}: not a Keras model file ({e})") from None
    return workloads.register(w), model


def connect(address: str):
    """A Dask client of the scheduler at ``address``, waiting ``distributed.comm.timeouts.connect``
    for it; one clear error when there is none."""
    import dask.config
    from distributed import Client

    from mcdask.security.gate import guard

    try:   # on a TLS scheduler, only workers whose certificate names them count (mcdask.security.gate)
        return guard(Client(address, timeout=dask.config.get("distributed.comm.timeouts.connect")))
    except ValueError as e:
        raise click.ClickException(f"--scheduler {address!r} is not a scheduler address ({e}); "
                                   "expected tcp://HOST:PORT") from None
    except (OSError, TypeError, RuntimeError) as e:
        if why := connect_problem(address, e):
            raise click.ClickException(why) from None
        if isinstance(e, OSError):
            raise click.ClickException(f"no scheduler answers at {address} ({e}); start `dask scheduler` there "
                                       "or check the address") from None
        raise


def _keeping(feed, into: list):
    for item in feed:
        into.append(item)
        yield item


@click.command()
@tls_options
@options.scheduler
@options.workload()
@click.option("--model", "model_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="your own Keras model (.keras) instead of a built-in one; its weights come from the file")
@click.option("--source", default="synthetic", show_default=True,
              help="synthetic, a video file, a folder of images, or camera:INDEX")
@click.option("--plan", "plan_opt", default=None,
              help="a plan file, a packaged plan's name, or auto (profile the workers, then plan) "
                   "[default: the planner's plan for the workers]")
@click.option("--profile", default=None,
              help="a built-in device kind or a profile file to plan with, at the start (without --plan) and "
                   "whenever devices leave or join [default: pi3]")
@click.option("--adapt/--no-adapt", default=True, show_default=True,
              help="move to the plan for the devices there are when devices leave, freeze or join")
@click.option("--frames", type=click.IntRange(1), default=None, help="stop after N frames [default: synthetic 60]")
@click.option("--overload", type=click.Choice(["block", "drop"]), default=None,
              help="when frames come faster than the devices answer: block (hold the source back) or drop "
                   "(skip frames; they are `dropped` records) [default: drop for camera:, block otherwise]")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="replay a file or synthetic source at this rate, as a camera would deliver it")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="write one JSON line per frame, as each completes")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a .keras / .weights.h5 file present at the same path on every device")
@click.option("--seed", default=0, show_default=True, help="seed of the default weights")
@click.option("--depth", type=click.IntRange(1), default=None, help="frames (or batches) in flight")
@click.option("--max-batch", type=click.IntRange(1), default=1, show_default=True,
              help="dynamic batching: frames waiting for the devices go up to this many to a task "
                   "(1: one frame per task, for the lowest latency)")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="dynamic batching: how long a frame may wait for others to share its task")
@click.option("--check", is_flag=True, help="also run the unsplit model here and compare every output "
              "(keeps every frame and answer until the end: not for endless streams)")
@options.backend
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON on the last stdout line")
def run(scheduler, workload, model_file, source, plan_opt, profile, adapt, frames, overload, fps, out, weights, seed,
        depth, max_batch, max_wait_ms, check, backend, as_json):
    """Stream SOURCE through WORKLOAD split across the workers of a running scheduler.

    Exit status: 0 done; 1 bad input or the plan could not be deployed; 3 the stream
    stopped early (scheduler lost, no plan fits the devices left), with every frame
    answered before that in --out and in the summary."""
    import dask

    from mcdask.runtime.deploy import bind, worker_names
    from mcdask.runtime.history import client_config
    from mcdask.runtime.weights import WeightsSource
    from mcdask.streaming.dynamic import DynamicBatcher
    from mcdask.streaming.fit import check_fits, for_live_devices
    from mcdask.streaming.sources import Feeder, latest, open_source, opened, paced

    show_events_on_stderr()
    if (workload is None) == (model_file is None):
        raise click.UsageError("give one of --workload (a built-in model) or --model (a .keras file)")
    keras_model = None
    if model_file:
        w, keras_model = user_model(model_file)
        workload, weights = w.name, weights or str(Path(model_file).resolve())
    w = workloads.get(workload)
    if frames is None and source == "synthetic":
        frames = 80 if w.max_window > 1 else 60
    try:
        wsrc = WeightsSource(seed, weights).check()
        plans = plan_book(w, profile)
        raw = opened(open_source(source, w, seed))   # it opens and decodes a frame before anything connects
        with dask.config.set({"distributed.comm.compression": dask.config.get("mcdask.compression"),
                              **client_config()}), options.using_backend(backend), connect(scheduler) as client:
            names = worker_names(client)
            if not names:
                raise click.ClickException(f"no workers at {scheduler}; start `dask worker {scheduler}` on each device")
            # plan for the smallest device's memory and the largest runtime; refuse a plan that does not fit
            plans, memory = for_live_devices(client, w, profile, configured_runtime(backend))
            if plan_opt and plan_opt != "auto":
                from mcdask.plans import resolve

                plan = resolve(plan_opt).validate(w)
            elif plan_opt == "auto":  # measure the workers (or reuse their cached profile), plan on that
                from mcdask.profiling.cache import auto_plan
                plan = auto_plan(client, w, progress=lambda msg: say(as_json, f"profiling: {msg}"))
            else:
                plan = plans.plan_for(tuple(names))
            check_fits(w, plan, plans.profile(plan.devices), bind(plan, names), memory)
            items: list = []
            if fps:
                raw = paced(raw, fps)
            if (overload or ("drop" if source.startswith("camera:") else "block")) == "drop":
                raw = latest(raw)
            feed = Feeder(w).items(raw, frames)
            batcher = DynamicBatcher(w, max_batch, max_wait_ms / 1e3) if max_batch > 1 else None
            if check:  # keep the frames to run the unsplit model on them afterwards
                feed = _keeping(feed, items)
            records, summary = stream_through(client, plan, feed, wsrc, depth, out, not as_json, frames,
                                              plans=plans if adapt else None,
                                              keep="outputs" if check else "nothing", batcher=batcher)
        if check:
            summary.update(check_against_reference(w, items, records, wsrc))
            if keras_model is not None:
                from mcdask.streaming.reference import against_keras

                summary["keras"] = against_keras(keras_model, w, items, records)
    except McdaskError as e:
        raise click.ClickException(str(e)) from e
    summary = {"workload": workload, "devices": len(plan.devices), "source": source, **summary,
               "plan": plan.to_dict()}
    if out:
        summary["out"] = str(Path(out))
    finish(summary, as_json, summary_lines(summary, plan, w))
    if why := nothing_classified(summary, plan, w):
        raise click.ClickException(why)
    if summary.get("stopped"):
        sys.exit(EXIT_STOPPED)
    if check and not summary["equal"]:
        sys.exit(EXIT_ERROR)
