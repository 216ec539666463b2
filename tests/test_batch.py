"""Batch mode (``mcdask batch``, ``mcdask.classify``): K frames per task answer as the unsplit
model frame by frame, in order, bad frames in their place; the cost model's batch dimension;
``--resume`` after a kill. In-process (``LocalRunner``) but for one test on stock processes."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time

import dask.array as da
import numpy as np
import pytest
from helpers import items_for, random_plan
from stock import BIN, StockCluster

import mcdask
import workloads
from mcdask.errors import FrameError, McdaskError, PlanError
from mcdask.model.kinds import device_names
from mcdask.planning.batching import batch_cost, batch_size_for, choose_batch_size, fit_fixed_fraction
from mcdask.planning.costmodel import evaluate
from mcdask.runtime import local
from mcdask.runtime.local import LocalRunner
from mcdask.streaming.batch import Unbatcher, batched, refuse_windowed, resume_point
from mcdask.streaming.controller import plan_book
from mcdask.streaming.records import Item, Record, validate
from mcdask.streaming.reference import reference_outputs
from mcdask.streaming.sources import open_source
from mcdask.streaming.stream import Stream

ALEXNET = workloads.get("alexnet")
IMAGE = ALEXNET.image_input


@pytest.fixture(autouse=True)
def _free_slices():
    yield
    local._CACHE.clear()


def batch_records(plan, items, k: int) -> list[Record]:
    """``items`` through ``plan`` in this process, ``k`` frames per task, split per frame."""
    runner = LocalRunner(plan)
    unbatch = Unbatcher()
    stream = Stream(runner, plan, ALEXNET, depth=2, batch=k)
    return list(unbatch.records(stream.run(batched(ALEXNET, items, k, unbatch.members))))


def test_batches_of_1_to_8_on_random_plans_equal_the_unsplit_model():
    items = items_for(ALEXNET, 11)
    items[3] = Item(3, error="frame 3: cannot decode image x.jpg")          # a bad frame keeps its place
    items[6] = Item(6, {IMAGE: np.zeros((1, 5, 5, 3), np.uint8)})        # one that fails validation
    ref = reference_outputs("alexnet", items)
    assert sorted(ref) == [0, 1, 2, 4, 5, 7, 8, 9, 10]
    rng = np.random.default_rng(25)   # two plans: 6 and 7 devices, a split dense layer, replicas
    plans = [random_plan(ALEXNET, rng).validate(ALEXNET) for _ in range(2)]
    assert any(st.split for p in plans for st in p.stages), "no plan splits a dense layer"
    assert any(len(sh.devices) > 1 for p in plans for st in p.stages for sh in st.shards), "no plan replicates"
    for k in range(1, 9):
        plan = plans[(k - 1) // 4]   # each plan takes four batch sizes
        records = batch_records(plan, items, k)
        assert [r.frame for r in records] == list(range(11)), (k, plan.to_json())
        assert [r.status for r in records] == ["ok"] * 3 + ["error"] + ["ok"] * 2 + ["error"] + ["ok"] * 4
        assert "cannot decode" in (records[3].error or "") and "shape" in (records[6].error or "")
        for r in records:
            if r.status == "ok":
                scale = np.abs(ref[r.frame]).max()
                assert r.output.shape == ref[r.frame].shape
                assert np.abs(r.output - ref[r.frame]).max() <= 1e-5 * scale, (k, r.frame, plan.to_json())
        if k % 4 == 0:
            local._CACHE.clear()   # one plan's slices at a time


def test_a_failed_batch_is_an_error_for_each_of_its_frames():
    unbatch = Unbatcher()
    items = [Item(0, {IMAGE: np.zeros((1, 220, 220, 3), np.uint8)}), Item(1, error="frame 1: bad"),
             Item(2, {IMAGE: np.zeros((1, 220, 220, 3), np.uint8)})]
    (b,) = list(batched(ALEXNET, items, 2, unbatch.members))
    assert b.inputs is not None and b.inputs[IMAGE].shape == (2, 220, 220, 3)
    out = unbatch.split(Record(0, "error", error="frame 0: no answer after 3 submissions"))
    assert [(r.frame, r.status) for r in out] == [(0, "error"), (1, "error"), (2, "error")]
    assert out[0].error == "batch 0: no answer after 3 submissions" and out[1].error == "frame 1: bad"


def test_validate_takes_a_stack_only_in_batch_mode():
    two = {IMAGE: np.zeros((2, 220, 220, 3), np.uint8)}
    assert validate(ALEXNET, two, batch=4)[IMAGE].shape == (2, 220, 220, 3)
    with pytest.raises(FrameError, match=r"expected \(220, 220, 3\) \(or \(1, 220, 220, 3\)\)"):
        validate(ALEXNET, two)
    with pytest.raises(FrameError, match="stacked, at most 2 of them"):
        validate(ALEXNET, {IMAGE: np.zeros((3, 220, 220, 3), np.uint8)}, batch=2)


def test_windowed_workloads_are_refused_in_one_line():
    with pytest.raises(McdaskError, match="batch mode does not take action: it reads windows"):
        refuse_windowed(workloads.get("action"))
    refuse_windowed(ALEXNET)


def test_resume_point_keeps_whole_lines_in_order_and_cuts_a_torn_one(tmp_path):
    out = tmp_path / "r.jsonl"
    assert resume_point(out) == 0
    good = "".join(json.dumps({"frame": i, "status": "ok"}) + "\n" for i in range(3))
    out.write_text(good + '{"frame": 3, "sta')
    assert resume_point(out) == 3 and out.read_text() == good
    out.write_text(good + json.dumps({"frame": 7}) + "\n")      # not the next frame: cut there
    assert resume_point(out) == 3 and out.read_text() == good


def test_the_cost_model_learns_the_batch_dimension():
    book = plan_book(ALEXNET, None)
    names = device_names("pi3", 3)
    plan, profile = book.plan_for(names), book.profile(names)
    one, eight = batch_cost(ALEXNET, plan, profile, 1), batch_cost(ALEXNET, plan, profile, 8)
    assert one.ips == pytest.approx(evaluate(ALEXNET, plan, profile).ips)     # k = 1 is the frame model
    assert one.memory_bytes == evaluate(ALEXNET, plan, profile).memory_bytes
    assert eight.ips > 1.5 * one.ips
    assert all(eight.memory_bytes[d] > one.memory_bytes[d] for d in plan.devices)   # activations x 8
    dense_only = batch_cost(ALEXNET, plan, profile, 8, {"dense": 1.0})   # convolutions grow with k
    assert dense_only.ips < eight.ips
    assert fit_fixed_fraction(2.0, 4.0, 8) == pytest.approx(6 / 7)


def test_auto_picks_a_size_that_fits_and_refuses_when_nothing_does():
    vgg = workloads.get("vgg16")
    book = plan_book(vgg, None)
    names = device_names("pi3", 9)
    plan, profile = book.plan_for(names), book.profile(names)
    choice = choose_batch_size(vgg, plan, profile)
    assert choice.too_big, "1 GB devices cannot hold 32 frames of VGG16 activations"
    first_too_big = min(choice.too_big)
    assert choice.k < first_too_big and max(choice.ips) == first_too_big - 1
    assert choice.ips[choice.k] >= 0.95 * max(choice.ips.values())
    with pytest.raises(PlanError, match=r"batch size 64: pi3-\d+ would need \d+ MB of its 1007 MB"):
        batch_size_for(vgg, plan, profile, 64)
    assert batch_size_for(vgg, plan, profile, 2).k == 2
    # devices 1 MB short of what the plan's fullest device needs at one frame
    small = plan_book(vgg, None, max(plan.predicted["memory_bytes"].values()) - 1_000_000)
    with pytest.raises(PlanError):
        choose_batch_size(vgg, plan, small.profile(names))


@pytest.mark.slow
def test_a_batch_job_killed_half_way_resumes_without_losing_or_repeating_a_frame(tmp_path):
    frames = 48
    cluster = StockCluster(tmp_path, env={"DASK_MCDASK__WORKER__INTRA_OP_THREADS": "1"})
    out = tmp_path / "r.jsonl"
    cmd = [str(BIN / "mcdask"), "batch", "-s", cluster.address, "-w", "alexnet", "--source", "synthetic",
           "--frames", str(frames), "--batch-size", "4", "-o", str(out), "--json"]
    try:
        cluster.start_scheduler()
        for name in ("pi3-00", "pi3-01"):
            cluster.start_worker(name)
        cluster.wait_for(2)
        job = subprocess.Popen(cmd, cwd=tmp_path, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        deadline = time.monotonic() + 180   # the workers' first deployment builds their slices
        while (not out.exists() or len(out.read_text().splitlines()) < frames // 2) and job.poll() is None:
            assert time.monotonic() < deadline, "the job wrote not half of its frames in 180 s"
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
        held = resume_point(out)
        assert frames // 2 <= held < frames
        again = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=cluster.env, capture_output=True, text=True,
                               timeout=180)
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout.strip().splitlines()[-1])
        assert summary["resumed_from"] == held and summary["classified"] == frames - held
        assert summary["depth"] == 4   # two batches in flight per device (mcdask.streaming.batch.batch_depth)
        with cluster.client() as client:   # the Python API, on a dask.array of frames in chunks of 4
            raw = np.stack(list(itertools.islice(open_source("synthetic", ALEXNET), 10)))
            api = list(mcdask.classify(client, "alexnet", da.from_array(raw, chunks=(4, -1, -1, -1)), batch_size=3))
    finally:
        assert cluster.close() == []
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [d["frame"] for d in lines] == list(range(frames))
    ref = reference_outputs("alexnet", items_for(ALEXNET, frames))
    for d in lines:
        want = np.argsort(-ref[d["frame"]].reshape(-1), kind="stable")[:5].tolist()
        assert d["status"] == "ok" and [c["class"] for c in d["top5"]] == want, d["frame"]
    assert [(r.frame, r.status) for r in api] == [(i, "ok") for i in range(10)]
    assert all(np.abs(r.output - ref[r.frame]).max() <= 1e-5 * np.abs(ref[r.frame]).max() for r in api)


BAD_COMMAND_LINES = {
    "windowed workload": (["-w", "action", "--source", "synthetic", "--frames", "9"], 1,
                          "batch mode does not take action: it reads windows of consecutive frames"),
    "synthetic without --frames": (["-w", "alexnet", "--source", "synthetic"], 2,
                                   "synthetic frames never end: give --frames N"),
    "a camera": (["-w", "alexnet", "--source", "camera:0"], 2, "batch mode reads a dataset; a camera is a live source"),
    "batch size": (["-w", "alexnet", "--source", "synthetic", "--frames", "9", "--batch-size", "0"], 2,
                   "is neither auto nor a whole number of frames >= 1"),
    "results already there": (["-w", "alexnet", "--source", "synthetic", "--frames", "9"], 1,
                              "already holds results: add --resume to finish that job"),
}


@pytest.mark.parametrize("case", sorted(BAD_COMMAND_LINES))
def test_a_bad_batch_command_line_is_one_line_before_anything_connects(case, tmp_path):
    from click.testing import CliRunner

    from mcdask.cli import main

    args, code, says = BAD_COMMAND_LINES[case]
    out = tmp_path / "r.jsonl"
    if case == "results already there":
        out.write_text('{"frame": 0, "status": "ok"}\n')
    r = CliRunner().invoke(main, ["batch", "-s", "tcp://127.0.0.1:9", "-o", str(out), *args])
    assert r.exit_code == code and says in " ".join(r.output.split()), r.output


def test_resuming_a_finished_job_does_nothing_and_connects_nowhere(tmp_path):
    from click.testing import CliRunner

    from mcdask.cli import main

    out = tmp_path / "r.jsonl"
    out.write_text("".join(json.dumps({"frame": i, "status": "ok"}) + "\n" for i in range(9)))
    r = CliRunner().invoke(main, ["batch", "-s", "tcp://127.0.0.1:9", "-o", str(out), "-w", "alexnet",
                                  "--source", "synthetic", "--frames", "9", "--resume", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["resumed_from"] == 9
