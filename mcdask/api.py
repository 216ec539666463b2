"""mcdask as a library: plan, deploy and stream from Python. ``import mcdask`` exposes these
names and loads TensorFlow and ``distributed`` only when they are first used.

Stream your own video through your own weights, on any Dask scheduler::

    import mcdask
    from distributed import Client

    with Client("tcp://scheduler:8786") as client:
        for r in mcdask.stream(client, "alexnet", "clip.mp4", weights="/data/alexnet.weights.h5"):
            print(r.frame, r.status, r.top5[:1])

``stream`` plans for the workers the scheduler has (unless given a plan), deploys, adapts to
devices leaving and joining, and yields one ``Result`` per frame, in order. ``astream`` is its
twin for ``Client(asynchronous=True)``. ``classify`` is batch mode: a whole dataset, K frames
per task, for when latency does not matter. ``plan`` and ``deploy`` are the steps, for those who
want them.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import workloads
from mcdask.model.plan import Plan
from mcdask.runtime.weights import WeightsSource
from mcdask.streaming.records import Item, Record


class Prediction(NamedTuple):
    """One of a frame's top-5 classes: its index, score and name (None when the workload has
    no label set)."""

    id: int
    score: float
    label: str | None


@dataclass(frozen=True)
class Result:
    """One frame's answer. ``status``: ``ok``; ``warmup`` (the action model's windows are
    still filling); ``error`` (``error`` says why: a bad frame, or a frame the stream could not
    answer); ``dropped`` (skipped under overload). ``output`` is the model's output vector."""

    frame: int
    status: str
    top5: tuple[Prediction, ...]
    latency_s: float | None
    output: np.ndarray | None
    error: str | None = None


@contextlib.contextmanager
def local_cluster(devices: int = 6):
    """A Dask cluster of ``devices`` one-thread worker processes on this machine (what ``mcdask
    demo`` runs on), each giving TensorFlow one thread; yields a ``Client`` of it."""
    import logging

    import dask.config
    from distributed import Client, LocalCluster

    from mcdask.runtime.history import client_config

    with dask.config.set({"mcdask.worker.intra-op-threads": 1, **client_config(),
                          "distributed.comm.compression": dask.config.get("mcdask.compression")}), \
            LocalCluster(n_workers=devices, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def workload_of(workload) -> workloads.Workload:
    """A workload from its name, a ``Workload``, or a Keras model (read by ``from_keras`` and
    registered in this process)."""
    if isinstance(workload, str):
        return workloads.get(workload)
    if isinstance(workload, workloads.Workload):
        return workload if workloads.builtin(workload.name) else workloads.register(workload)
    if hasattr(workload, "layers") and hasattr(workload, "inputs"):
        from workloads.keras_model import from_keras

        return workloads.register(from_keras(workload))
    raise TypeError(f"workload must be a name ({', '.join(workloads.NAMES)}), a Workload or a Keras model, "
                    f"not {type(workload).__name__}")


def plan(workload, devices: int | Iterable[str], *, profile: str = "pi3", memory_bytes: int | None = None) -> Plan:
    """The planner's plan of ``workload`` for ``devices`` (a count of ``profile`` devices, or
    the devices' names), on a built-in device kind or a profile file; ``memory_bytes`` plans
    for devices with that much memory."""
    from mcdask.model.kinds import device_names
    from mcdask.streaming.controller import plan_book

    w = workload_of(workload)
    names = device_names(profile, devices) if isinstance(devices, int) else tuple(devices)
    return plan_book(w, profile, memory_bytes).plan_for(names)


def weights_of(weights, workload=None, seed: int = 0) -> WeightsSource:
    """A checked ``WeightsSource``: None (seeded with ``seed``), a path to a ``.keras`` /
    ``.weights.h5`` file present at that path on every device, or a Keras model whose weights
    are saved once to a file in this machine's temp dir (so, for a cluster on this machine)."""
    if weights is None and workload is not None and hasattr(workload, "layers"):
        weights = workload
    if weights is None:
        return WeightsSource(seed)
    if isinstance(weights, (str, Path)):
        return WeightsSource(seed, str(weights)).check()
    if isinstance(weights, WeightsSource):
        return weights.check()
    from mcdask.runtime.weights import save_by_name
    from mcdask.streaming.reference import keras_layers

    path = Path(tempfile.mkdtemp(prefix="mcdask-weights-")) / f"{weights.name}.weights.h5"
    save_by_name(path, {n: l.get_weights() for n, l in keras_layers(weights).items() if l.weights
                        and not hasattr(l, "layers") and not hasattr(l, "layer")})
    return WeightsSource(seed, str(path)).check()


def deploy(client, plan: Plan, *, weights=None, seed: int = 0):
    """Make ``client``'s workers hold ``plan``'s slices; returns the ``Deployment``."""
    from mcdask.runtime.deploy import deploy as _deploy

    return _deploy(client, plan, weights_of(weights, None, seed))


def frames_of(workload, frames, *, seed: int = 0, limit: int | None = None) -> Iterator[Item]:
    """Items of ``frames``: a source (``"synthetic"``, a video file, a folder of images,
    ``"camera:N"``, or a path) or an iterable of RGB ``uint8`` arrays (H, W, 3), resized to
    the workload's input (with optical flow for the action model)."""
    from mcdask.streaming.sources import Feeder, open_source

    w = workload_of(workload)
    raw = open_source(str(frames), w, seed) if isinstance(frames, (str, Path)) else _rows(frames)
    return Feeder(w).items(raw, limit)


def _rows(frames) -> Iterator:
    """The frames of an iterable; a ``dask.array`` of frames ``(N, H, W, 3)`` is computed a
    chunk of frames at a time (by Dask's current scheduler), never whole."""
    if not (hasattr(frames, "dask") and hasattr(frames, "chunks")):
        yield from frames
        return
    start = 0
    for n in frames.chunks[0]:
        yield from np.asarray(frames[start:start + n].compute())
        start += n


def result_of(rec: Record, labels: list[str] | None) -> Result:
    top5 = tuple(Prediction(c, s, labels[c] if labels and c < len(labels) else None) for c, s in rec.top5)
    return Result(rec.frame, rec.status, top5, rec.latency_s, rec.output, rec.error)


def stream(client, workload, frames, *, plan: Plan | str | None = None, weights=None, seed: int = 0,
           depth: int | None = None, adapt: bool = True, profile: str | None = None,
           limit: int | None = None) -> Generator[Result, None, None]:
    """Stream ``frames`` (see ``frames_of``) through ``workload`` split across ``client``'s
    workers; yield one ``Result`` per frame, in order.

    ``plan``: a ``Plan``, a plan file or a packaged plan name (``mcdask.plans.names()``);
    default the planner's plan for the workers there are, on ``profile`` (default pi3). With
    ``adapt`` the deployment moves to the plan for the devices there are whenever devices
    leave, freeze or join. ``weights``: see ``weights_of``. Raises ``StreamStopped`` when the
    stream cannot go on (the scheduler is lost, no plan fits the devices left)."""
    from mcdask.runtime.deploy import worker_names
    from mcdask.security.gate import guard
    from mcdask.streaming.controller import plan_book
    from mcdask.streaming.session import Session

    guard(client)   # on a TLS scheduler, impostors go before the plan is chosen for the workers there are
    w = workload_of(workload)
    wsrc = weights_of(weights, workload, seed)
    book = plan_book(w, profile)
    chosen = _plan_of(plan, w) if plan is not None else book.plan_for(tuple(worker_names(client)))
    session = Session(client, chosen, wsrc, depth=depth, plans=book if adapt else None)
    labels = workloads.labels(w.name)
    for rec in session.records(frames_of(w, frames, seed=seed, limit=limit)):
        yield result_of(rec, labels)


def classify(client, workload, frames, *, batch_size: int | str = "auto", plan: Plan | str | None = None,
             weights=None, seed: int = 0, depth: int | None = None, adapt: bool = True, profile: str | None = None,
             limit: int | None = None) -> Generator[Result, None, None]:
    """Classify ``frames`` (as ``stream`` takes them, or a ``dask.array`` of frames) in batches
    of ``batch_size`` frames per task (``"auto"``: the size the cost model predicts fastest
    within every device's memory), for when latency does not matter; yield one ``Result`` per
    frame, in order (``latency_s`` is its batch's). ``depth`` batches are in flight (default two
    per device). The other options are ``stream``'s; a windowed workload (action) is refused."""
    from mcdask.planning.batching import batch_size_for
    from mcdask.runtime.deploy import worker_names
    from mcdask.security.gate import guard
    from mcdask.streaming.batch import batch_depth, frame_records, refuse_windowed
    from mcdask.streaming.controller import plan_book
    from mcdask.streaming.session import Session

    guard(client)
    w = workload_of(workload)
    refuse_windowed(w)
    wsrc = weights_of(weights, workload, seed)
    book = plan_book(w, profile)
    chosen = _plan_of(plan, w) if plan is not None else book.plan_for(tuple(worker_names(client)))
    k = batch_size_for(w, chosen, book.profile(chosen.devices), None if batch_size == "auto" else int(batch_size)).k
    depth = batch_depth(chosen, depth)
    session = Session(client, chosen, wsrc, depth=depth, plans=book if adapt else None, batch=k)
    labels = workloads.labels(w.name)
    for rec in frame_records(session, w, frames_of(w, frames, seed=seed, limit=limit), k, depth):
        yield result_of(rec, labels)


async def astream(client, workload, frames, **options: Any) -> AsyncIterator[Result]:
    """``stream`` for an asynchronous client (``Client(asynchronous=True)``): the stream runs
    on a thread with its own client of the same scheduler and security, and its results come
    through a queue, so the event loop never waits on the stream. Leaving the loop early stops
    the stream."""
    from distributed import Client

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)
    stop = threading.Event()
    end = object()

    def put(x) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(x), loop).result()

    def work() -> None:
        try:
            with Client(client.scheduler.address, security=client.security, set_as_default=False) as own:
                results = stream(own, workload, frames, **options)
                for r in results:
                    put(r)
                    if stop.is_set():
                        results.close()
                        break
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting side, raised there
            put(e)
        finally:
            put(end)

    task = loop.run_in_executor(None, work)
    item = None
    try:
        while (item := await queue.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while item is not end:      # left early: drain what the thread still puts, to its end
            item = await queue.get()
        await task


def _plan_of(plan: Plan | str, w) -> Plan:
    from mcdask.plans import resolve

    return (plan if isinstance(plan, Plan) else resolve(str(plan))).validate(w)
