"""Batch mode: a whole dataset through a plan, K frames per task, for when latency does not
matter.

A batch is one ``Item`` whose arrays stack K frames (its ``frame`` is the batch's index): it goes
through the same ``Stream`` as a single frame (deadlines, resubmission, plan switches when
devices leave), every piece computing the K frames in one call (slices take any batch size).
``batched`` groups a source's items so; ``Unbatcher`` turns each batch's record back into one
record per frame, in frame order, frames the source could not give (bad ones) in their place.

``--out`` of a batch job holds one JSON line per frame, in order, written a batch at a time;
``resume_point`` reads how far a killed job got (and cuts a torn last line) so ``--resume``
skips those frames. At most ``depth`` batches are in flight (``batch_depth``: two per device
by default), so a killed job computes at most that many again.

Windowed workloads (the action model: optical flow and temporal windows across frames) are
refused: ``refuse_windowed``.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from mcdask.errors import FrameError, McdaskError
from mcdask.streaming.records import Item, Record, top5, validate


def batch_depth(plan, depth: int | None = None) -> int:
    """Batches in flight: ``depth``, else two per device of ``plan``, so that each device
    computes one while the frames of its next one are already on it. With one per device,
    every device waits between batches for its answer to leave and the next K frames to
    arrive: 0.7-0.9 s of every 6.1 s for AlexNet at K = 32 on the pi3 farm (issue 16). A
    killed batch job computes at most this many batches again."""
    return depth or 2 * len(plan.devices)


def refuse_windowed(workload, what: str = "batch mode") -> None:
    """Batch mode computes each frame alone: a workload that reads windows of frames or
    optical flow between them is refused in one line."""
    if workload.max_window > 1 or workload.flow_stack:
        raise McdaskError(f"{what} does not take {workload.name}: it reads windows of consecutive frames "
                          "(optical flow, temporal pyramid); stream it with `mcdask run` instead")


def checked(workload, item: Item) -> Item:
    """``item`` checked as one frame: a frame whose inputs do not pass becomes an error item,
    so one bad frame never sinks its batch."""
    if item.inputs is None or item.error is not None or item.warmup or item.dropped:
        return item
    try:
        return Item(item.frame, validate(workload, item.inputs))
    except FrameError as e:
        return Item(item.frame, error=f"frame {item.frame}: {e}")


def batched(workload, items: Iterable[Item], k: int, members: dict[int, list[Item]]) -> Iterator[Item]:
    """Items of up to ``k`` frames stacked (the last may hold fewer), indexed 0, 1, ...; the
    items each batch stands for (bad ones included, in order) go into ``members`` under its
    index. Bad items after the last good frame make a batch of their own, with no inputs."""
    index, group, good = 0, [], 0
    for raw in items:
        item = checked(workload, raw)
        group.append(item)
        good += item.inputs is not None
        if good == k:
            members[index] = group
            yield stacked(index, group)
            index, group, good = index + 1, [], 0
    if group:
        members[index] = group
        yield stacked(index, group)


def stacked(index: int, group: list[Item]) -> Item:
    good = [it for it in group if it.inputs is not None]
    if not good:
        return Item(index, error=f"batch {index}: no usable frame")
    names = good[0].inputs or {}
    return Item(index, {name: np.concatenate([it.inputs[name] for it in good if it.inputs], axis=0)
                        for name in names})


class Unbatcher:
    """Batch records -> frame records, in frame order (see ``batched``)."""

    def __init__(self) -> None:
        self.members: dict[int, list[Item]] = {}

    def records(self, batch_records: Iterable[Record]) -> Iterator[Record]:
        for rec in batch_records:
            yield from self.split(rec)

    def split(self, rec: Record) -> list[Record]:
        """One record per frame of batch ``rec.frame``."""
        out, row = [], 0
        for it in self.members.pop(rec.frame):
            if it.inputs is None:
                status = "error" if it.error is not None else "dropped" if it.dropped else "warmup"
                out.append(Record(it.frame, status, error=it.error))
            elif rec.status == "ok" and rec.output is not None:
                y = rec.output[row:row + 1]
                out.append(Record(it.frame, "ok", latency_s=rec.latency_s, top5=top5(y), output=y,
                                  done_at=rec.done_at, plan_id=rec.plan_id, attempts=rec.attempts))
            else:
                why = (rec.error or f"batch {rec.frame}: {rec.status}").replace(f"frame {rec.frame}:",
                                                                               f"batch {rec.frame}:", 1)
                out.append(Record(it.frame, "error", error=why, plan_id=rec.plan_id, attempts=rec.attempts))
            row += it.inputs is not None
        return out


def resume_point(path: str | Path) -> int:
    """Frames ``--out`` at ``path`` already holds: its longest run of complete JSON lines for
    frames 0, 1, 2, ... Whatever follows (a line torn by a kill) is cut off the file, so
    appending goes on from there. 0 when the file does not exist."""
    p = Path(path)
    if not p.exists():
        return 0
    done, keep = 0, 0
    with open(p, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                frame = json.loads(line).get("frame")
            except (ValueError, AttributeError):
                break
            if frame != done:
                break
            done, keep = done + 1, keep + len(line)
    if keep < p.stat().st_size:
        os.truncate(p, keep)
    return done


def lines_of(records: list[Record], labels, t0: float) -> str:
    """The ``--out`` lines of ``records`` (``Record.to_dict``, with ``t_s``: when the answer
    came, in seconds since the job began), as one string to write at once."""
    lines = []
    for rec in records:
        d = rec.to_dict(labels)
        if rec.done_at is not None:
            d["t_s"] = round(rec.done_at - t0, 4)
        lines.append(json.dumps(d) + "\n")
    return "".join(lines)


def frame_records(session, workload, items: Iterable[Item], k: int, depth: int) -> Iterator[Record]:
    """``items`` through ``session`` (a ``Session`` made with ``batch=k`` and ``depth``) in
    batches of ``k``; one record per item, in frame order.

    When the stream stops (``StreamStopped``, raised after this), the batches it could not
    answer are not given as error records: a resumed job computes them. So a failed batch is
    held back until a later one succeeds or the job ends, and only the ``depth`` most recent
    ones (those a stop can leave unanswered) are held."""
    unbatch = Unbatcher()
    held: deque[Record] = deque()
    for rec in session.records(batched(workload, items, k, unbatch.members)):
        if rec.status != "ok":
            held.append(rec)
            if len(held) > depth:
                yield from unbatch.split(held.popleft())
            continue
        while held:
            yield from unbatch.split(held.popleft())
        yield from unbatch.split(rec)
    while held:
        yield from unbatch.split(held.popleft())
