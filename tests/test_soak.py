"""Endless streams keep flat memory: the client holds no output array past its frame, every
frame is written to ``--out`` once, in order, and the scheduler's and workers' low-level
histories are bounded by ``mcdask.history-length`` (stock `dask scheduler` / `dask worker`
processes). The soak's own arithmetic is checked on made-up samples."""

from __future__ import annotations

import json

import dask.config
import pytest
from distributed import Client
from helpers import items_for
from stock import StockCluster

import workloads
from bench.soak import check_out_file, growth
from mcdask.commands import plan_book, stream_through
from mcdask.runtime.history import client_config, trim_spans
from mcdask.runtime.weights import WeightsSource

W = workloads.get("alexnet")
FRAMES = 300


@pytest.mark.slow
def test_a_long_stream_keeps_no_outputs_and_bounded_histories(tmp_path):
    def scheduler_logs(dask_scheduler) -> dict:
        bcomms = [*dask_scheduler.stream_comms.values(), *dask_scheduler.client_comms.values()]
        return {"key_cache": "mcdask-key-cache" in dask_scheduler.periodic_callbacks,
                "transition_log": dask_scheduler.transition_log.maxlen,
                "messages": max(b.recent_message_log.maxlen for b in bcomms),
                "events": max(t.events.maxlen for t in dask_scheduler._broker._topics.values())}

    def worker_logs(dask_worker) -> dict:
        return {"profile_history": dask_worker.profile_history.maxlen,
                "stimulus_log": dask_worker.state.stimulus_log.maxlen,
                "messages": dask_worker.batched_stream.recent_message_log.maxlen}

    def span_entries(dask_scheduler) -> tuple[int, int, int]:
        """Longest span metadata before and after ``trim_spans``, and what it dropped."""
        def longest() -> int:
            return max(len((sp._metadata or {}).get("collections", ()))
                       for sp in dask_scheduler.extensions["spans"].spans.values())
        before = longest()
        dropped = trim_spans(dask_scheduler, dask.config.get("mcdask.history-length"))
        return before, longest(), dropped

    cluster = StockCluster(tmp_path)
    cluster.start_scheduler()
    try:
        for name in ("w1", "w2", "w3"):
            cluster.start_worker(name)
        cluster.wait_for({"w1", "w2", "w3"})
        n = dask.config.get("mcdask.history-length")
        out = tmp_path / "out.jsonl"
        feed = iter(items_for(W, FRAMES))
        with dask.config.set(client_config()), Client(cluster.address, timeout="30s") as client:
            plans = plan_book(W, None)
            records, summary = stream_through(client, plans.plan_for(("w1", "w2", "w3")), feed, WeightsSource(),
                                              None, str(out), False, FRAMES, plans=plans)
            sched, workers = client.run_on_scheduler(scheduler_logs), client.run(worker_logs)
            spans = client.run_on_scheduler(span_entries)   # the stream's span, trimmed by now or not
            messages = client.scheduler_comm.recent_message_log.maxlen
    finally:
        assert not cluster.close(), "processes left behind"
    assert [r.frame for r in records] == list(range(FRAMES))
    assert all(r.status == "ok" and r.output is None for r in records)
    assert summary["classified"] == FRAMES and 0 < summary["latency_p50_s"] <= summary["latency_p99_s"]
    assert summary["ips_steady"] > 0 and summary["longest_gap_s"] > 0
    assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == list(range(FRAMES))
    assert check_out_file(out, FRAMES) is None
    assert messages == n
    # Dask adds an entry to the span per task submitted; the trim keeps the last n (it also runs
    # every 5 s with the key cache's, so the stream's span may already be down to n)
    before, after, dropped = spans
    assert before >= n and after == n and before - dropped == n, spans
    assert sched == {"key_cache": True, "transition_log": n, "messages": n, "events": n}
    assert all(w == {"profile_history": n, "stimulus_log": n, "messages": n} for w in workers.values()), workers


def test_dasks_key_split_memo_is_cleared_past_its_bound():
    """A stream's keys are unique per frame; Dask's key_split memo would keep every one of them
    (up to 100,000): trim_key_cache empties it once it holds more than the bound."""
    from dask.utils import key_split

    from mcdask.runtime.history import trim_key_cache

    key_split.cache_clear()
    for i in range(30):
        key_split(("conv1..pool5-abc", "token", i))
    held = key_split.cache_info().currsize
    assert held >= 30 and not trim_key_cache(limit=held)
    key_split(("conv1..pool5-abc", "token", 30))
    assert trim_key_cache(limit=held) and key_split.cache_info().currsize == 0


def test_growth_between_a_quarter_and_the_end():
    samples = [{"frames": f, "anon": {"client": 100 * 2**20 + (f >= 500) * 3 * 2**20, "w1": 200 * 2**20 + f * 2**10}}
               for f in range(0, 1001, 10)]
    g = growth(samples, 1000)
    assert g["client"] == {"quarter_mb": 100.0, "end_mb": 103.0, "growth": 0.03}
    assert g["w1"]["growth"] == pytest.approx((1000 - 250) * 2**10 / (200 * 2**20 + 250 * 2**10), abs=2e-3)


def test_the_out_file_check_names_a_missing_or_repeated_frame(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps({"frame": f, "status": "ok"}) + "\n" for f in (0, 1, 1, 3)))
    assert check_out_file(out, 4) == "line 3 is frame 1, expected 2"
    out.write_text("".join(json.dumps({"frame": f}) + "\n" for f in (0, 1)))
    assert check_out_file(out, 3) == "2 lines for 3 frames"
    assert check_out_file(out, 2) is None


def test_an_answered_frame_keeps_no_input_when_no_window_needs_it():
    from test_stream_supervised import FakeRunner, alex_plan, items

    from mcdask.streaming.stream import Stream

    plan = alex_plan(("d0", "d1"))
    stream = Stream(FakeRunner(plan), plan, W, depth=4, deadline_s=60)
    records = list(stream.run(items(12)))
    assert [r.status for r in records] == ["ok"] * 12
    assert stream._recent and all(fr.inputs == {} for fr in stream._recent)


HEAP_PROBE = """
import sys, numpy as np, psutil
from mcdask.runtime.malloc import trim_freed_memory
print(trim_freed_memory() if sys.argv[1] == "trim" else None)
p = psutil.Process()
a = np.ones(30 * 2**20, np.uint8); del a   # freeing a large block raises glibc's own threshold
base = p.memory_info().rss
xs = [bytes(1000) + bytes([i % 256]) for i in range(40_000)]   # 40 MB of heap, then freed
del xs
print((p.memory_info().rss - base) / 2**20)
"""


@pytest.mark.parametrize("mode", ["trim", "untouched"])
def test_freed_heap_goes_back_to_the_os_once_the_trim_threshold_is_set(mode):
    """``trim_freed_memory`` (called by the mcdask command and the history plugins) makes a
    process give 40 MB of freed heap back; glibc on its own keeps it (the control)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout.split()
    kept_mb = float(out[1])
    if mode == "trim":
        assert out[0] == "True" and kept_mb < 5, out
    else:
        assert out[0] == "None" and kept_mb > 30, out
