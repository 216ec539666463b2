"""Stream frames through a plan: one chain of tasks per frame, results in frame order.

``Stream`` reads a plan and asks a runner to start each piece of each stage for each frame;
it never decides placement itself. A runner (``mcdask.runtime.deploy.DaskRunner`` on a cluster,
``mcdask.runtime.local.LocalRunner`` in this process) has ``plan``, ``submit(stage, shard, frame,
feeds) -> future``, ``gather(futures)`` and ``cancel(futures)``; futures have
``add_done_callback``. Futures of earlier stages are passed inside ``feeds``, so activations
move from worker to worker, never through the client.

A windowed stage (the temporal pyramid) for frame i reads the exports of frames
``[i - w + 1, i + 1)``; it runs once every input has a full window, and the frames before
that come out as ``warmup`` records.

Every frame comes out exactly once, in order, and no wait is unbounded:

* a **supervisor** (``mcdask.streaming.controller.Controller``), polled while the stream runs, may hand
  over a runner for a new deployment. Frames not yet answered are then resubmitted under the
  new plan (with the window history they need rebuilt first), and the old plan's tasks are
  cancelled. The supervisor stops the stream by raising ``StreamStopped``;
* a frame not answered within its **deadline** (from the plan's predicted latency) is submitted
  once more (speculative re-execution: the first complete answer wins, the other is
  cancelled); after ``attempts`` tries it becomes an ``error`` record naming the wait.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import Protocol

import dask.config
import numpy as np

from mcdask.errors import FrameError, StreamStopped
from mcdask.model.plan import Plan
from mcdask.streaming.records import Item, Record, top5, validate


class Runner(Protocol):
    plan: Plan

    def submit(self, stage: int, shard: int, frame: int, feeds: dict): ...
    def gather(self, futures: list) -> list: ...
    def cancel(self, futures: list) -> None: ...
    def why_stalled(self) -> str | None: ...


class Supervisor(Protocol):
    def poll(self, urgent: bool = False) -> Runner | None: ...


def default_depth(plan: Plan) -> int:
    """Frames in flight: enough to fill the pipeline twice over (predicted IPS x latency, a
    count that does not depend on the speed of the profile the plan was made for), at least
    two per device, plus two to cover Dask's own round trip. Deeper only adds queueing to
    every frame's latency."""
    pred = plan.predicted or {}
    pipeline = math.ceil(2 * pred.get("ips", 0) * pred.get("latency_s", 0))
    return max(2 * len(plan.devices), pipeline) + 2


def frame_deadline_s(plan: Plan, depth: int, batch: int = 1) -> float:
    """How long a frame may wait for its answer before it is submitted again: ``factor`` x
    what the plan predicts for the frame at the head of a full pipeline (its latency plus
    ``depth`` frame intervals), never under ``deadline-min``; ``deadline`` when the plan
    predicts nothing. An item of ``batch`` frames (batch mode) may take ``batch`` times as
    long: no piece takes longer per frame in a batch than alone."""
    cfg = dask.config.get("mcdask.stream")
    floor = float(dask.utils.parse_timedelta(cfg.get("deadline-min", "5s")))
    pred = plan.predicted or {}
    if not pred.get("ips") or not pred.get("latency_s"):
        return max(floor, float(dask.utils.parse_timedelta(cfg.get("deadline", "60s"))))
    return max(floor, batch * float(cfg.get("deadline-factor", 4)) * (pred["latency_s"] + depth / pred["ips"]))


class Layout:
    """What a plan means for feeding frames: each stage's inputs (producer stage or the
    frame, window), the first valid frame each stage runs for, the history each keeps."""

    def __init__(self, plan: Plan, workload):
        self.plan = plan
        producer = {}
        for si, st in enumerate(plan.stages):
            for name in workload.stage_outputs(st.start, st.end):
                producer[name] = si
        self.feeds_of: list[list[tuple[str, int | None, int]]] = []
        for st in plan.stages:
            first_layer = workload.layers[st.start]
            ins = []
            for name in workload.stage_inputs(st.start, st.end):
                w = workload.window_of(first_layer.name, name) if name in first_layer.inputs else 1
                ins.append((name, producer.get(name), w))
            self.feeds_of.append(ins)
        self.first: list[int] = []
        for ins in self.feeds_of:
            self.first.append(max([0] + [self.first[p] + w - 1 for _, p, w in ins if p is not None]))
        self.keep = [1] * len(plan.stages)
        for ins in self.feeds_of:
            for _, p, w in ins:
                if p is not None:
                    self.keep[p] = max(self.keep[p], w)
        self.last = len(plan.stages) - 1

    @property
    def warmup_frames(self) -> int:
        """Valid frames before the last stage first runs (window fill)."""
        return self.first[self.last]


def frames_before_first_answer(plan: Plan, workload) -> int:
    """How many source frames a stream reads before its first answer: the optical flow's
    frame pairs (``Feeder``), then the windows of windowed stages (``Layout``)."""
    return workload.flow_stack + Layout(plan, workload).warmup_frames + 1


class _Attempt:
    """One submission of a frame's chain: its last stage's futures, done when all are."""

    def __init__(self, futs: list, plan_id: str, cond: threading.Condition):
        self.futs, self.plan_id = futs, plan_id
        self.done_at: float | None = None
        left = [len(futs)]

        def cb(_):
            with cond:
                left[0] -= 1
                if left[0] == 0:
                    self.done_at = time.perf_counter()
                    cond.notify_all()

        for f in futs:
            f.add_done_callback(cb)


@dataclass
class _Frame:
    frame: int                        # index in the source
    i: int                            # index among valid frames (the windows count these)
    inputs: dict
    t0: float
    cond: threading.Condition = field(default_factory=threading.Condition)
    attempts: list[_Attempt] = field(default_factory=list)
    submissions: int = 0
    deadline: float = 0.0


class Stream:
    """Submit frames through ``plan`` with at most ``depth`` frames in flight. With ``batch``
    > 1 an item may stack up to that many frames (``mcdask.streaming.batch``): one chain of
    tasks computes them all, and its record's output has one row per frame."""

    def __init__(self, runner: Runner, plan: Plan, workload, depth: int | None = None, *,
                 supervisor: Supervisor | None = None, events=None, deadline_s: float | None = None,
                 attempts: int | None = None, batch: int = 1):
        self.runner, self.workload, self.batch = runner, workload, batch
        self.depth = depth or dask.config.get("mcdask.stream.depth", None) or default_depth(plan)
        self.supervisor, self.events = supervisor, events
        self._given_deadline_s = deadline_s
        self._use(plan)
        self.attempts = attempts or int(dask.config.get("mcdask.stream.attempts", 3))
        self.output_layer = workload.layers[-1]
        self._hist: list[dict[int, list]] = [{} for _ in plan.stages]
        self._pending: deque = deque()
        self._head: _Frame | None = None       # the frame being answered (left the queue)
        # submitted frames that later ones may still need (windows, resubmission)
        self._recent: deque[_Frame] = deque()

    @property
    def plan(self) -> Plan:
        return self.layout.plan

    def _use(self, plan: Plan) -> None:
        """Read ``plan`` once: how frames feed its stages, and how long a frame may wait."""
        self.layout = Layout(plan, self.workload)
        self.deadline_s = self._given_deadline_s or frame_deadline_s(plan, self.depth, self.batch)

    def run(self, items: Iterable[Item]) -> Iterator[Record]:
        """Yield one record per item read, in frame order. When the supervisor stops the
        stream, the frames read but not answered come out as ``error`` records naming why,
        then ``StreamStopped`` is raised."""
        try:
            yield from self._run(items)
        except StreamStopped as e:
            for entry in [self._head, *self._pending]:
                if isinstance(entry, Record):
                    yield entry
                elif entry is not None:
                    yield Record(entry.frame, "error", error=f"frame {entry.frame}: not answered: {e}",
                                 attempts=entry.submissions)
            self._head = None
            self._pending.clear()
            raise

    def _run(self, items: Iterable[Item]) -> Iterator[Record]:
        pending = self._pending
        in_flight = 0
        i = 0  # index among valid frames (the windows count these)
        drops: list[int] = []   # a run of frames dropped at the source, told as one event
        for item in items:
            if item.dropped:
                drops.append(item.frame)
            elif drops:
                self._dropped(drops)
            if item.error is not None or item.warmup or item.dropped or item.inputs is None:
                status = "error" if item.error is not None else "dropped" if item.dropped else "warmup"
                pending.append(Record(item.frame, status, error=item.error))
            else:
                try:
                    inputs = validate(self.workload, item.inputs, self.batch)
                except FrameError as e:
                    pending.append(Record(item.frame, "error", error=f"frame {item.frame}: {e}"))
                else:
                    fr = _Frame(item.frame, i, inputs, time.perf_counter())
                    self._remember(fr)
                    if i >= self.layout.warmup_frames:
                        self._submit(fr, final=True)
                        pending.append(fr)
                        in_flight += 1
                    else:
                        self._submit(fr, final=False)
                        pending.append(Record(item.frame, "warmup"))
                    i += 1
            self._poll(urgent=False)
            while pending and (isinstance(pending[0], Record) or in_flight >= self.depth):
                head = pending.popleft()
                if isinstance(head, _Frame):
                    in_flight -= 1
                yield self._finish(head)
        if drops:
            self._dropped(drops)
        while pending:
            yield self._finish(pending.popleft())

    def _dropped(self, frames: list[int]) -> None:
        if self.events is not None:
            self.events.emit("dropped", f"frames {frames[0]}..{frames[-1]} ({len(frames)}) dropped at the source: "
                             "the stream was full", frames=len(frames), first=frames[0], last=frames[-1])
        frames.clear()

    # ---- submission -------------------------------------------------------------------------
    def _remember(self, fr: _Frame) -> None:
        self._recent.append(fr)
        while len(self._recent) > self.layout.warmup_frames + self.depth + 1:
            self._recent.popleft()

    def _submit(self, fr: _Frame, final: bool) -> None:
        """Submit frame ``fr``'s stages under the current plan (the last one only if
        ``final``: a frame already answered only rebuilds window history)."""
        lay, hist, i = self.layout, self._hist, fr.i
        last_futs = None
        for si, st in enumerate(lay.plan.stages):
            if i < lay.first[si] or (si == lay.last and not final):
                continue
            feeds = {}
            for name, p, w in lay.feeds_of[si]:
                feeds[name] = fr.inputs[name] if p is None else [hist[p][j] for j in range(i - w + 1, i + 1)]
            hist[si][i] = last_futs = [self.runner.submit(si, h, i, feeds) for h in range(len(st.shards))]
            hist[si].pop(i - lay.keep[si], None)
        if final:
            assert last_futs is not None, "every plan has a last stage"
            fr.attempts.append(_Attempt(last_futs, lay.plan.id, fr.cond))
            fr.submissions += 1
            fr.deadline = time.perf_counter() + self.deadline_s

    def _poll(self, urgent: bool) -> None:
        if self.supervisor is None:
            return
        runner = self.supervisor.poll(urgent=urgent)
        if runner is not None:
            old, self.runner = self.runner, runner
            self._use(runner.plan)
            self._hist = [{} for _ in runner.plan.stages]
            waiting = [fr for fr in (self._head, *self._pending) if isinstance(fr, _Frame) and _answered(fr) is None]
            for fr in waiting:
                old.cancel([f for a in fr.attempts for f in a.futs])
                fr.attempts = []
            self._resubmit(waiting, rebuild=True)
            if waiting and self.events is not None:
                self.events.emit("resubmitted", f"{len(waiting)} frames in flight resubmitted under plan "
                                 f"{runner.plan.id} (frames {waiting[0].frame}..{waiting[-1].frame})",
                                 frames=len(waiting), plan=runner.plan.id)

    def _resubmit(self, frames: list[_Frame], rebuild: bool) -> None:
        """Submit ``frames`` (oldest first) again under the current plan. Windowed stages read
        earlier frames' exports: with ``rebuild`` (a new plan: no history) or when some of
        that history is gone, it is computed again first, from the frames' kept inputs."""
        lay = self.layout
        if not lay.warmup_frames:
            for fr in frames:
                self._submit(fr, final=True)
            return
        again = {id(fr) for fr in frames}
        start = (frames[0].i if frames else self._recent[-1].i + 1) - lay.warmup_frames
        if not rebuild and all(j in self._hist[p] for fr in frames for si in range(len(lay.plan.stages))
                               for _, p, w in lay.feeds_of[si] if p is not None
                               for j in range(fr.i - w + 1, fr.i)):
            for fr in frames:
                self._submit(fr, final=True)
            return
        for fr in list(self._recent):
            if fr.i >= start:
                self._submit(fr, final=id(fr) in again)

    # ---- answers ----------------------------------------------------------------------------
    def _finish(self, head) -> Record:
        if isinstance(head, Record):
            return head
        fr: _Frame = head
        self._head = fr            # stays set if the stream stops while waiting for it
        record = self._answer(fr)
        self._head = None
        return record

    def _answer(self, fr: _Frame) -> Record:
        while True:
            with fr.cond:
                fr.cond.wait_for(lambda: _answered(fr) is not None,
                                 timeout=0.2 if self.supervisor is not None
                                 else max(0.0, fr.deadline - time.perf_counter()))
            won = _answered(fr)
            if won is not None:
                try:
                    parts = self.runner.gather(won.futs)
                except (TimeoutError, CancelledError, OSError):
                    # no answer from the model: its data went with a lost device, the scheduler
                    # cancelled it, or the connection broke (a lost scheduler stops the stream at
                    # the poll); only an error the piece itself raised becomes an error record
                    self._poll(urgent=True)
                    if won in fr.attempts:
                        fr.attempts.remove(won)
                    if not fr.attempts:
                        self._resubmit([fr], rebuild=False)
                    continue
                except Exception as e:  # noqa: BLE001 - one frame failed: report it, keep streaming
                    self._poll(urgent=True)   # the scheduler may be gone: that stops the stream
                    if _answered(fr) is not won:   # a switch resubmitted it meanwhile
                        continue
                    self._drop_others(fr, won)
                    return Record(fr.frame, "error", error=f"frame {fr.frame}: {type(e).__name__}: {e}",
                                  plan_id=won.plan_id, attempts=fr.submissions)
                self._drop_others(fr, won)
                if not self.layout.warmup_frames:
                    fr.inputs = {}   # answered, and no window reads it again: its frame is freed
                out = _merge(self.output_layer, [p[self.output_layer.name] for p in parts])
                done_at = won.done_at or time.perf_counter()   # set: _answered returns done attempts
                return Record(fr.frame, "ok", latency_s=done_at - fr.t0, top5=top5(out), output=out,
                              done_at=done_at, plan_id=won.plan_id, attempts=fr.submissions)
            self._poll(urgent=True)
            if time.perf_counter() < fr.deadline or _answered(fr) is not None:
                continue
            waited = time.perf_counter() - fr.t0
            why = self.runner.why_stalled()
            why = f"; {why}" if why else ""
            if fr.submissions >= self.attempts:
                self._drop_others(fr, None)
                return Record(fr.frame, "error", plan_id=self.plan.id, attempts=fr.submissions,
                              error=f"frame {fr.frame}: no answer after {fr.submissions} submissions "
                                    f"in {waited:.1f} s (deadline {self.deadline_s:.1f} s each){why}")
            if self.events is not None:
                self.events.emit("resubmitted", f"frame {fr.frame} unanswered after {waited:.1f} s: "
                                 f"submitted again under plan {self.plan.id}{why}", frames=1, frame=fr.frame,
                                 plan=self.plan.id)
            self._resubmit([fr], rebuild=False)

    def _drop_others(self, fr: _Frame, won: _Attempt | None) -> None:
        others = [f for a in fr.attempts if a is not won for f in a.futs]
        if others:
            self.runner.cancel(others)
        fr.attempts = []


def _answered(fr: _Frame) -> _Attempt | None:
    """The first of ``fr``'s attempts whose futures are all done."""
    done = [(a.done_at, i, a) for i, a in enumerate(fr.attempts) if a.done_at is not None]
    return min(done)[2] if done else None


def _merge(layer, parts: list[np.ndarray]) -> np.ndarray:
    from mcdask.runtime.slices import merge

    return merge(layer, parts)
