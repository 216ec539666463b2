"""Stream frames through a plan: one chain of tasks per frame, results in frame order.

``Stream`` reads a plan and asks a runner to start each piece of each stage for each frame;
it never decides placement itself. A runner is anything with ``submit(stage, shard, frame,
feeds) -> future`` and ``gather(futures) -> results``: ``mcdask.runtime.DaskRunner`` on a
cluster, ``mcdask.local.LocalRunner`` in this process. Futures of earlier stages are passed
inside ``feeds``, so activations move from worker to worker, never through the client.

A windowed stage (the temporal pyramid) for frame i reads the exports of frames
``[i - w + 1, i + 1)``; it runs once every input has a full window, and the frames before
that come out as ``warmup`` records.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

import dask.config
import numpy as np

from .errors import FrameError
from .plan import Plan


class Runner(Protocol):
    def submit(self, stage: int, shard: int, frame: int, feeds: dict): ...
    def gather(self, futures: list) -> list: ...


@dataclass
class Item:
    """One frame from a source: ``inputs`` (name -> array) or why there is nothing to run."""

    frame: int
    inputs: dict[str, np.ndarray] | None = None
    error: str | None = None          # bad input: reported, never submitted
    warmup: bool = False              # e.g. optical flow still needs earlier frames


@dataclass
class Record:
    frame: int
    status: str                       # ok | warmup | error
    latency_s: float | None = None
    top5: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    output: np.ndarray | None = field(default=None, repr=False)
    done_at: float | None = field(default=None, repr=False)   # perf_counter when the answer was ready

    def to_dict(self) -> dict:
        d = {"frame": self.frame, "status": self.status}
        if self.status == "ok":
            d["top5"] = [{"class": c, "score": round(s, 6)} for c, s in self.top5]
            d["latency_s"] = round(self.latency_s, 6)
        if self.error:
            d["error"] = self.error
        return d


def top5(vec: np.ndarray) -> list[tuple[int, float]]:
    v = np.asarray(vec).reshape(-1)
    idx = np.argsort(-v, kind="stable")[:5]
    return [(int(i), float(v[i])) for i in idx]


def validate(workload, inputs: dict) -> dict[str, np.ndarray]:
    """Check one frame's inputs; returns them with a batch axis. Raises FrameError."""
    if not isinstance(inputs, dict):
        inputs = {next(iter(workload.inputs)): inputs}
    out = {}
    for name, shape in workload.inputs.items():
        if name not in inputs:
            raise FrameError(f"input {name!r} missing; {workload.name} needs {sorted(workload.inputs)}")
        x = np.asarray(inputs[name])
        if x.shape == shape:
            x = x[None]
        if x.shape != (1,) + shape:
            raise FrameError(f"input {name!r} has shape {x.shape}, expected {shape} (or {(1,) + shape})")
        if x.dtype not in (np.uint8, np.float32, np.float64):
            raise FrameError(f"input {name!r} has dtype {x.dtype}, expected uint8 or float32")
        if x.dtype != np.uint8 and not np.isfinite(x).all():
            raise FrameError(f"input {name!r} contains NaN or infinite values")
        out[name] = x if x.dtype != np.float64 else x.astype(np.float32)
    extra = set(inputs) - set(workload.inputs)
    if extra:
        raise FrameError(f"unknown inputs {sorted(extra)}; {workload.name} takes {sorted(workload.inputs)}")
    return out


def default_depth(plan: Plan) -> int:
    """Frames in flight: enough to fill the pipeline twice over (predicted IPS x latency, a
    count that does not depend on the speed of the profile the plan was made for), at least
    two per device, plus two to cover Dask's own round trip. Deeper only adds queueing to
    every frame's latency."""
    pred = plan.predicted or {}
    pipeline = math.ceil(2 * pred.get("ips", 0) * pred.get("latency_s", 0))
    return max(2 * len(plan.devices), pipeline) + 2


class Stream:
    """Submit frames through ``plan`` with at most ``depth`` frames in flight."""

    def __init__(self, runner: Runner, plan: Plan, workload, depth: int | None = None):
        self.runner, self.plan, self.workload = runner, plan, workload
        self.depth = depth or dask.config.get("mcdask.stream.depth", None) or default_depth(plan)
        stages = plan.stages
        producer = {}
        for si, st in enumerate(stages):
            for name in workload.stage_outputs(st.start, st.end):
                producer[name] = si
        # for each stage: [(input name, producer stage or None, window)]
        self.feeds_of = []
        for st in stages:
            first_layer = workload.layers[st.start]
            ins = []
            for name in workload.stage_inputs(st.start, st.end):
                w = workload.window_of(first_layer.name, name) if name in first_layer.inputs else 1
                ins.append((name, producer.get(name), w))
            self.feeds_of.append(ins)
        self.first = []
        for ins in self.feeds_of:
            self.first.append(max([0] + [self.first[p] + w - 1 for _, p, w in ins if p is not None]))
        self.keep = [1] * len(stages)
        for ins in self.feeds_of:
            for _, p, w in ins:
                if p is not None:
                    self.keep[p] = max(self.keep[p], w)
        self.output_layer = workload.layers[-1]

    def run(self, items: Iterable[Item]) -> Iterator[Record]:
        """Yield one record per item, in frame order."""
        hist: list[dict[int, list]] = [{} for _ in self.plan.stages]
        pending: deque = deque()
        in_flight = 0
        i = 0  # index among valid frames (the windows count these)
        last = len(self.plan.stages) - 1
        for item in items:
            if item.error is not None or item.warmup or item.inputs is None:
                status = "error" if item.error is not None else "warmup"
                pending.append(("done", Record(item.frame, status, error=item.error)))
            else:
                try:
                    inputs = validate(self.workload, item.inputs)
                except FrameError as e:
                    pending.append(("done", Record(item.frame, "error", error=f"frame {item.frame}: {e}")))
                else:
                    t0 = time.perf_counter()
                    for si, st in enumerate(self.plan.stages):
                        if i < self.first[si]:
                            continue
                        feeds = {}
                        for name, p, w in self.feeds_of[si]:
                            feeds[name] = inputs[name] if p is None else [hist[p][j] for j in range(i - w + 1, i + 1)]
                        hist[si][i] = [self.runner.submit(si, h, i, feeds) for h in range(len(st.shards))]
                        hist[si].pop(i - self.keep[si], None)
                    if i >= self.first[last]:
                        futs = hist[last][i]
                        pending.append(("run", item.frame, futs, t0, _done_clock(futs)))
                        in_flight += 1
                    else:
                        pending.append(("done", Record(item.frame, "warmup")))
                    i += 1
            while pending and (pending[0][0] == "done" or in_flight >= self.depth):
                entry = pending.popleft()
                if entry[0] == "run":
                    in_flight -= 1
                yield self._finish(entry)
        while pending:
            yield self._finish(pending.popleft())

    def _finish(self, entry) -> Record:
        if entry[0] == "done":
            return entry[1]
        _, frame, futs, t0, clock = entry
        try:
            parts = self.runner.gather(futs)
        except Exception as e:  # one frame failed on a worker: report it, keep streaming
            return Record(frame, "error", error=f"frame {frame}: {type(e).__name__}: {e}")
        done = clock.get("t") or time.perf_counter()
        from .slices import merge

        out = merge(self.output_layer, [p[self.output_layer.name] for p in parts])
        return Record(frame, "ok", latency_s=done - t0, top5=top5(out), output=out, done_at=done)


def _done_clock(futs) -> dict:
    """Records when the last of ``futs`` finishes (from the futures' callbacks)."""
    clock: dict = {}
    left = [len(futs)]
    lock = threading.Lock()

    def cb(_):
        with lock:
            left[0] -= 1
            if left[0] == 0:
                clock["t"] = time.perf_counter()

    for f in futs:
        f.add_done_callback(cb)
    return clock


def steady_ips(ok: list[Record], skip: float = 0.2) -> float | None:
    """Answers per second once the pipeline is full: over the answers after the first
    ``skip`` of them (pipeline fill left out), by their completion times."""
    done = sorted(r.done_at for r in ok if r.done_at is not None)
    first = int(len(done) * skip)
    if len(done) - first < 3 or done[-1] <= done[first]:
        return None
    return (len(done) - 1 - first) / (done[-1] - done[first])


def summarize(records: list[Record], wall_s: float) -> dict:
    """Throughput and latency of a finished stream (IPS counts frames classified)."""
    ok = [r for r in records if r.status == "ok"]
    lat = sorted(r.latency_s for r in ok)
    pct = (lambda q: float(np.percentile(lat, q))) if lat else (lambda q: None)
    return {"frames": len(records), "classified": len(ok), "ips_steady": steady_ips(ok),
            "warmup": sum(r.status == "warmup" for r in records),
            "errors": sum(r.status == "error" for r in records),
            "wall_s": wall_s, "ips": len(ok) / wall_s if wall_s > 0 else 0.0,
            "latency_p50_s": pct(50), "latency_p99_s": pct(99)}
