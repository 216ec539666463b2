"""Dynamic batching in streams (``--max-batch K --max-wait-ms T``): frames that wait go through
the plan K at a time and answer as the unsplit model, in order; a frame that finds nothing to
batch with is held at most T; latency runs from the frame's arrival."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import items_for, random_plan

import workloads
from mcdask.errors import McdaskError, SourceError
from mcdask.runtime import local
from mcdask.runtime.local import LocalRunner
from mcdask.streaming.dynamic import DynamicBatcher
from mcdask.streaming.records import Item, Record
from mcdask.streaming.reference import reference_outputs
from mcdask.streaming.stream import Stream

ALEXNET = workloads.get("alexnet")
IMAGE = ALEXNET.image_input


def frame(i: int) -> Item:
    return Item(i, {IMAGE: np.zeros((1, 220, 220, 3), np.uint8)})


def test_a_backlog_goes_through_k_at_a_time_and_equals_the_unsplit_model():
    items = items_for(ALEXNET, 10)
    items[2] = Item(2, error="frame 2: cannot decode image x.jpg")     # a bad frame keeps its place
    ref = reference_outputs("alexnet", items)
    plan = random_plan(ALEXNET, np.random.default_rng(25)).validate(ALEXNET)
    batcher = DynamicBatcher(ALEXNET, max_batch=4, max_wait_s=0.05)
    stream = Stream(LocalRunner(plan), plan, ALEXNET, depth=2, batch=4)
    try:
        records = list(batcher.records(stream.run(batcher.batches(items))))
    finally:
        local._CACHE.clear()
    assert [r.frame for r in records] == list(range(10))
    assert [r.status for r in records] == ["ok", "ok", "error"] + ["ok"] * 7
    assert max(batcher.sizes) == 4 and sum(batcher.sizes) == 9, batcher.sizes
    for r in records:
        if r.status == "ok":
            assert np.abs(r.output - ref[r.frame]).max() <= 1e-5 * np.abs(ref[r.frame]).max()
            assert r.latency_s is not None and r.latency_s > 0
    assert not batcher.arrived and not batcher.unbatch.members   # nothing kept per frame


def test_a_slow_source_is_never_held_for_a_batch():
    """Frames 0.15 s apart, T = 20 ms: each waits for company at most T, so none finds any."""
    def slow():
        for i in range(5):
            time.sleep(0.15)
            yield frame(i)

    batcher = DynamicBatcher(ALEXNET, max_batch=4, max_wait_s=0.02)
    got = list(batcher.batches(slow()))
    assert batcher.sizes == [1] * 5 and [b.inputs[IMAGE].shape[0] for b in got] == [1] * 5


def test_bad_frames_ride_along_without_taking_a_place():
    items = [frame(0), Item(1, error="frame 1: bad"), Item(2, dropped=True), frame(3), frame(4)]
    batcher = DynamicBatcher(ALEXNET, max_batch=2, max_wait_s=1.0)
    got = list(batcher.batches(items))
    assert batcher.sizes == [2, 1]
    assert [[it.frame for it in batcher.unbatch.members[b.frame]] for b in got] == [[0, 1, 2, 3], [4]]
    done = time.perf_counter() + 0.5
    out = list(batcher.records([Record(0, "ok", output=np.ones((2, 1000), np.float32), done_at=done),
                                Record(1, "ok", output=np.ones((1, 1000), np.float32), done_at=done)]))
    assert [(r.frame, r.status) for r in out] == [(0, "ok"), (1, "error"), (2, "dropped"), (3, "ok"), (4, "ok")]
    assert out[0].latency_s >= 0.5 and out[3].latency_s >= 0.5   # from arrival, not from submission


def test_sources_that_fail_or_stall_say_so():
    def broken():
        yield frame(0)
        raise SourceError("video x.mkv: invalid data at frame 1")

    with pytest.raises(SourceError, match="invalid data at frame 1"):
        list(DynamicBatcher(ALEXNET, 4, 0.01).batches(broken()))

    def stalled():
        yield frame(0)
        time.sleep(5)

    with pytest.raises(SourceError, match="the source gave no frame for 1 s"):
        list(DynamicBatcher(ALEXNET, 4, 0.01, idle_s=1).batches(stalled()))
    with pytest.raises(McdaskError, match="dynamic batching does not take action: it reads windows"):
        DynamicBatcher(workloads.get("action"), 4, 0.01)


def test_the_places_of_dropped_frames_take_no_room_in_the_queue():
    """Under overload most of what the source gives is dropped frames' places: a queue they
    filled would leave batches half empty."""
    items = [frame(0), *(Item(i, dropped=True) for i in range(1, 7)), frame(7), frame(8), frame(9)]
    batcher = DynamicBatcher(ALEXNET, max_batch=4, max_wait_s=1.0)
    got = list(batcher.batches(items))
    assert batcher.sizes == [4] and len(got) == 1
    assert [it.frame for it in batcher.unbatch.members[0]] == list(range(10))
