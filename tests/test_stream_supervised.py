"""The stream's guarantees with a fake runner and a fake supervisor (no Dask, no TensorFlow):
every frame once, in order, through plan switches, lost answers and deadlines."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

import workloads
from mcdask.errors import StreamStopped
from mcdask.model.plan import Plan, Shard, Stage
from mcdask.streaming.controller import Membership, bind_for_reuse
from mcdask.streaming.events import EventLog
from mcdask.streaming.records import Item
from mcdask.streaming.stream import Stream

ALEX = workloads.get("alexnet")
OUT = ALEX.layers[-1]


def alex_plan(devices: tuple[str, ...]) -> Plan:
    """Convs replicated on all but the last device, the rest on the last one."""
    return Plan("alexnet", devices, (Stage(0, 9, (Shard(None, devices[:-1] or devices),)),
                                     Stage(9, 12, (Shard(None, devices[-1:]),))))


class FakeRunner:
    """Answers frame f with a vector whose first unit is f, unless told to hold answers
    (``hold``: all of them, or the first ``hold`` submissions)."""

    def __init__(self, plan: Plan, hold: bool | int = False):
        self.plan, self.hold = plan, hold
        self.held: list[tuple[int, Future]] = []
        self.held_last: list[Future] = []
        self.cancelled: list[Future] = []
        self.submitted: list[tuple[int, int, int]] = []
        self.pixels: list[int] = []     # first pixel of every frame fed in

    def submit(self, stage, shard, frame, feeds):
        self.submitted.append((stage, shard, frame))
        if "frame" in feeds:
            self.pixels.append(int(feeds["frame"].flat[0]))
        fut: Future = Future()
        if self.hold is True or (self.hold is not False and len(self.submitted) <= self.hold):
            self.held.append((frame, fut))
            if stage == len(self.plan.stages) - 1:
                self.held_last.append(fut)
        else:
            fut.set_result(_answer(frame))
        return fut

    def release(self, frames=None):
        for frame, fut in list(self.held):
            if (frames is None or frame in frames) and not fut.done():
                fut.set_result(_answer(frame))

    def gather(self, futures):
        return [f.result(timeout=1) for f in futures]

    def cancel(self, futures):
        self.cancelled.extend(futures)
        for f in futures:
            f.cancel()

    def why_stalled(self):
        return None


def _answer(frame: int) -> dict:
    v = np.zeros((1, OUT.units), np.float32)
    v[0, 0] = frame
    return {OUT.name: v}


class SwitchAfter:
    """A supervisor that hands over ``runner`` after ``polls`` polls (once)."""

    def __init__(self, runner, polls: int):
        self.runner, self.polls = runner, polls

    def poll(self, urgent=False):
        self.polls -= 1
        if self.polls == 0:
            return self.runner
        return None


def items(n: int):
    rng = np.random.default_rng(0)
    return [Item(i, {"frame": rng.integers(0, 256, (1, 220, 220, 3), dtype=np.uint8)}) for i in range(n)]


def test_a_switch_resubmits_every_unanswered_frame_once_in_order():
    a, b = alex_plan(("d0", "d1", "d2")), alex_plan(("d0", "d1"))
    old = FakeRunner(a, hold=True)        # the old plan's last device is gone: nothing answers
    new = FakeRunner(b)
    events = EventLog()
    stream = Stream(old, a, ALEX, depth=4, supervisor=SwitchAfter(new, 6), events=events, deadline_s=60)
    records = list(stream.run(items(12)))
    assert [r.frame for r in records] == list(range(12))
    assert all(r.status == "ok" for r in records)
    assert [int(r.output[0, 0]) for r in records] == list(range(12))
    assert {r.plan_id for r in records} == {b.id}
    stuck = {f for f, _ in old.held}
    assert {r.frame for r in records if r.attempts == 2} == stuck and stuck
    # every abandoned task of the old plan was cancelled; the new plan got each frame once
    assert old.held_last and all(f.cancelled() for f in old.held_last)
    assert sorted(fr for si, _, fr in new.submitted if si == 1) == list(range(12))
    assert events.counts["resubmitted"] == 1


def test_answers_already_in_survive_a_switch():
    a, b = alex_plan(("d0", "d1", "d2")), alex_plan(("d0", "d1"))
    old = FakeRunner(a, hold=True)
    new = FakeRunner(b)

    class ReleaseThenSwitch:
        def __init__(self):
            self.n = 0

        def poll(self, urgent=False):
            self.n += 1
            if self.n == 4:
                old.release(frames={0, 1})   # two frames answered before the switch
                return new
            return None

    records = list(Stream(old, a, ALEX, depth=4, supervisor=ReleaseThenSwitch(), deadline_s=60).run(items(8)))
    assert [r.frame for r in records] == list(range(8))
    assert [r.plan_id for r in records[:2]] == [a.id, a.id]
    assert {r.plan_id for r in records[2:]} == {b.id}
    assert [int(r.output[0, 0]) for r in records] == list(range(8))


def test_an_overdue_frame_is_submitted_again_and_the_first_answer_wins():
    a = alex_plan(("d0", "d1"))
    runner = FakeRunner(a, hold=4)       # frames 0 and 1 (two stages each) hang; the rest answer

    class Nothing:
        def poll(self, urgent=False):
            return None

    events = EventLog()
    stream = Stream(runner, a, ALEX, depth=2, supervisor=Nothing(), events=events, deadline_s=0.3)
    records = list(stream.run(items(3)))
    assert [r.frame for r in records] == [0, 1, 2] and all(r.status == "ok" for r in records)
    assert [r.attempts for r in records] == [2, 2, 1]
    assert events.counts["resubmitted"] == 2
    # the first submission, never answered, was cancelled once the second won
    assert runner.held_last[0].cancelled()


def test_a_frame_never_answered_becomes_an_error_record_and_the_stream_goes_on():
    a = alex_plan(("d0", "d1"))
    runner = FakeRunner(a, hold=True)
    stream = Stream(runner, a, ALEX, depth=1, deadline_s=0.1, attempts=2)
    it = stream.run(items(2))
    first = next(it)
    assert first.status == "error" and "no answer after 2 submissions" in first.error
    runner.hold = False
    runner.release()
    rest = list(it)
    assert [r.frame for r in rest] == [1] and rest[0].status == "ok"


def test_a_supervisor_that_stops_the_stream_stops_it():
    a = alex_plan(("d0", "d1"))

    class GoneAfter:
        def __init__(self, polls):
            self.polls = polls

        def poll(self, urgent=False):
            self.polls -= 1
            if self.polls < 0:
                raise StreamStopped("lost the scheduler at tcp://x:1")

    for polls in range(8):   # stopped while reading, while waiting for a frame, ...
        runner = FakeRunner(a, hold=4)     # frames 0 and 1 hang, later ones answer
        got = []
        with pytest.raises(StreamStopped, match="lost the scheduler"):
            for r in Stream(runner, a, ALEX, depth=3, supervisor=GoneAfter(polls), deadline_s=60).run(items(6)):
                got.append(r)
        # every frame read gets one record, in order; those never answered name why
        assert [r.frame for r in got] == list(range(len(got))) and got, polls
        assert got[0].status == "error" and "not answered: lost the scheduler at tcp://x:1" in got[0].error


# ---- membership --------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def workers(**beats):
    return {f"tcp://{n}": {"name": n, "last_seen": s, "status": "running"} for n, s in beats.items()}


def test_membership_sees_joins_losses_freezes_and_returns():
    clock = Clock()
    m = Membership(heartbeat_timeout_s=3, back_after_s=1, clock=clock)
    usable, ch = m.observe(workers(a=1, b=1, c=1))
    assert usable == ("a", "b", "c") and [c.kind for c in ch] == ["joined"] * 3
    clock.t = 2
    usable, ch = m.observe(workers(a=2, b=1, c=2))         # b's heartbeat stalls
    assert usable == ("a", "b", "c") and not ch
    clock.t = 3.5
    usable, ch = m.observe(workers(a=3, b=1, c=3))
    assert usable == ("a", "c") and [(c.kind, c.device) for c in ch] == [("frozen", "b")]
    clock.t = 4
    usable, ch = m.observe(workers(a=4, b=4, c=4))         # heartbeats resume...
    assert usable == ("a", "c") and not ch
    clock.t = 5.1
    usable, ch = m.observe(workers(a=5, b=5, c=5))         # ...and stay fresh for back_after
    assert usable == ("a", "b", "c") and [(c.kind, c.device) for c in ch] == [("back", "b")]
    usable, ch = m.observe(workers(a=6, b=6))              # c leaves
    assert usable == ("a", "b") and [(c.kind, c.device) for c in ch] == [("lost", "c")]
    usable, ch = m.observe(workers(a=7, b=7, c=1, d=1))   # c returns under its name, d is new
    assert usable == ("a", "b", "c", "d") and [(c.kind, c.device) for c in ch] == [("back", "c"), ("joined", "d")]


def test_binding_for_reuse_keeps_pieces_where_they_are():
    old = Plan("alexnet", ("x", "y", "z"), (Stage(0, 9, (Shard(None, ("x", "y")),)),
                                            Stage(9, 12, (Shard(None, ("z",)),))))
    binding = {"x": "w1", "y": "w2", "z": "w3"}
    new = Plan("alexnet", ("p", "q"), (Stage(0, 9, (Shard(None, ("p",)),)), Stage(9, 12, (Shard(None, ("q",)),))))
    # w1 is gone; w3 holds the dense stage, so it keeps it; w2 keeps the convs
    assert bind_for_reuse(new, ("w2", "w3"), old, binding) == {"p": "w2", "q": "w3"}
    assert bind_for_reuse(new, ("w3", "w2"), old, binding) == {"p": "w2", "q": "w3"}


# ---- overload ----------------------------------------------------------------------------

def test_drop_policy_skips_frames_the_stream_cannot_take_and_keeps_source_indices():
    import time

    from mcdask.streaming.sources import Feeder, latest

    def source():
        for k in range(40):
            time.sleep(0.002)
            yield np.full((220, 220, 3), k, np.uint8)

    a = alex_plan(("d0", "d1"))
    events = EventLog()
    slow = FakeRunner(a)
    stream = Stream(slow, a, ALEX, depth=1, events=events, deadline_s=60)
    records = []
    for r in stream.run(Feeder(ALEX).items(latest(source(), waiting=2))):
        time.sleep(0.01)              # a stream slower than its source
        records.append(r)
    assert [r.frame for r in records] == list(range(40))
    dropped = [r.frame for r in records if r.status == "dropped"]
    assert dropped and records[0].status == "ok"
    assert {r.status for r in records} == {"ok", "dropped"}
    assert events.counts["dropped"] >= 1
    # what was classified is the frame with that index, not a neighbour
    kept = [r.frame for r in records if r.status == "ok"]
    assert slow.pixels == kept


def test_drop_policy_says_when_the_source_fails():
    from mcdask.errors import SourceError
    from mcdask.streaming.sources import latest

    def broken():
        yield np.zeros((2, 2, 3), np.uint8)
        raise SourceError("cannot decode frame 1")

    with pytest.raises(SourceError, match="cannot decode frame 1"):
        list(latest(broken()))


def test_a_broken_connection_while_gathering_is_no_answer_not_a_frame_error():
    """When the scheduler dies, a gather can fail with a comm error before the client says it
    is reconnecting: that frame must come out as 'not answered', like the frames after it."""
    a = alex_plan(("d0", "d1"))

    class Broken(FakeRunner):
        def gather(self, futures):
            raise ConnectionResetError("connection to the scheduler closed")

    class GoneOnSecondLook:
        """The client notices the lost connection only a moment after the gather failed."""

        def __init__(self):
            self.looks = 0

        def poll(self, urgent=False):
            self.looks += urgent
            if self.looks >= 2:
                raise StreamStopped("lost the scheduler at tcp://x:1")

    got = []
    with pytest.raises(StreamStopped):
        for r in Stream(Broken(a), a, ALEX, depth=2, supervisor=GoneOnSecondLook(), deadline_s=60).run(items(4)):
            got.append(r)
    assert got and all(r.status == "error" and "not answered: lost the scheduler" in r.error for r in got)
