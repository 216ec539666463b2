"""Dynamic batching in streams: frames that queue up go through the plan together.

A live stream runs one frame per task, for latency. When frames come faster than the devices
answer, they wait; then taking several in one task costs little more than one (a dense layer
reads its weights once per task: ``mcdask.planning.batching``), and the stream keeps up with
more of them. The serving systems do the same (Triton's dynamic batcher and its
``max_queue_delay``, Ray Serve's ``@serve.batch``): ``DynamicBatcher`` reads the source on a
thread into a queue of at most ``max_batch`` frames (the places of dropped and bad frames ride
along without taking room) and, each time the stream has room for
another item, stacks the frames waiting, up to ``max_batch``. When fewer are waiting it waits
for more, but never past ``max_wait_s`` after the first of them arrived, so a frame is held
back at most that long. With a source slower than the devices every batch is one frame (after
the wait); behind a backlog, batches fill at once.

The stacked items go through ``Stream`` like batch mode's (``mcdask.streaming.batch``: every
piece computes the stack in one call, results equal the unsplit model's), and come back as one
record per frame, in frame order, each frame's latency counted from when it came from the
source, its wait in the queue included. Workloads that read windows of frames (the action
model) are refused: their frames are not independent.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator

import dask.config

from mcdask.errors import SourceError
from mcdask.streaming.batch import Unbatcher, batch_depth, checked, refuse_windowed, stacked
from mcdask.streaming.records import Item, Record
from mcdask.streaming.stream import default_depth

#: a source that gives no frame for this long stops the stream (as ``sources.latest``)
IDLE_S = 30.0
_END = object()


def dynamic_depth(plan, max_batch: int) -> int:
    """Batches in flight: as many frames as the stream keeps in flight without batching
    (``mcdask.stream.depth``, else ``default_depth``), in batches of ``max_batch``, and at
    least batch mode's two per device (``batch_depth``: each device has its next batch on it
    when one ends). Frames wait at the source, where batches form, not in flight."""
    frames = dask.config.get("mcdask.stream.depth", None) or default_depth(plan)
    return max(batch_depth(plan), math.ceil(frames / max_batch))


class DynamicBatcher:
    """``batches(items)`` -> stacked items; ``records(batch_records)`` -> frame records."""

    def __init__(self, workload, max_batch: int, max_wait_s: float, idle_s: float = IDLE_S):
        refuse_windowed(workload, "dynamic batching")
        if max_batch < 1 or not max_wait_s >= 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_s >= 0; got {max_batch}, {max_wait_s}")
        self.workload, self.max_batch, self.max_wait_s, self.idle_s = workload, max_batch, max_wait_s, idle_s
        self.unbatch = Unbatcher()
        self.arrived: dict[int, float] = {}   # frame -> perf_counter when the source gave it
        self._room = threading.Semaphore(max_batch)   # frames waiting; dropped and bad ones take no room
        self.sizes: list[int] = []            # frames stacked in each task, in order (not counting
                                              # groups of only dropped or bad frames: no task)

    def batches(self, items: Iterable[Item]) -> Iterator[Item]:
        """Stacks of the frames waiting (module docstring), indexed 0, 1, ..."""
        q: queue.Queue = queue.Queue()
        room = self._room
        failure: list[BaseException] = []
        stop = threading.Event()

        def read() -> None:
            try:
                for item in items:
                    if item.inputs is not None:
                        while not stop.is_set() and not room.acquire(timeout=0.5):
                            pass
                    if stop.is_set():
                        return
                    q.put((time.perf_counter(), item))
            except BaseException as e:  # noqa: BLE001 - handed to the reading side
                failure.append(e)
            q.put((time.perf_counter(), _END))

        threading.Thread(target=read, name="mcdask-batcher", daemon=True).start()
        try:
            index, ended = 0, False
            while not ended:
                try:
                    t_first, first = q.get(timeout=self.idle_s)
                except queue.Empty:
                    raise SourceError(f"the source gave no frame for {self.idle_s:.0f} s") from None
                if first is _END:
                    break
                group = [self._arrived(t_first, first)]
                good = int(group[0].inputs is not None)
                until = t_first + self.max_wait_s
                while good < self.max_batch:
                    try:
                        t, item = q.get(timeout=max(0.0, until - time.perf_counter()))
                    except queue.Empty:
                        break
                    if item is _END:
                        ended = True
                        break
                    group.append(self._arrived(t, item))
                    good += group[-1].inputs is not None
                self.unbatch.members[index] = group
                if good:
                    self.sizes.append(good)
                yield stacked(index, group)
                index += 1
            if failure:
                raise failure[0]
        finally:
            stop.set()

    def _arrived(self, t: float, item: Item) -> Item:
        self.arrived[item.frame] = t
        if item.inputs is not None:
            self._room.release()
        return checked(self.workload, item)

    def summary(self) -> dict:
        """What it did: its settings and how many frames each task took."""
        sizes = self.sizes
        return {"max_batch": self.max_batch, "max_wait_ms": round(self.max_wait_s * 1e3, 3),
                "batches": len(sizes), "mean_batch": round(sum(sizes) / len(sizes), 3) if sizes else None,
                "batch_sizes": {str(k): sizes.count(k) for k in sorted(set(sizes))}}

    def records(self, batch_records: Iterable[Record]) -> Iterator[Record]:
        """One record per frame, in frame order; an answered frame's ``latency_s`` runs from
        its arrival to its answer."""
        for rec in batch_records:
            for r in self.unbatch.split(rec):
                came = self.arrived.pop(r.frame, None)
                if r.status == "ok" and r.done_at is not None and came is not None:
                    r.latency_s = r.done_at - came
                yield r
