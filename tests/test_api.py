"""The Python API on stock `dask scheduler`/`dask worker` processes: `mcdask.stream` and its
async twin give the unsplit model's answers, in order; the example script runs as written."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import items_for
from stock import StockCluster
from test_sources import _video

import mcdask
import workloads
from mcdask.streaming.reference import reference_outputs

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
W = workloads.get("alexnet")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = StockCluster(tmp_path_factory.mktemp("api"), env={"DASK_MCDASK__WORKER__INTRA_OP_THREADS": "1"})
    c.start_scheduler()
    try:
        for i in range(2):
            c.start_plain_worker(f"dev{i}")
        c.wait_for(2)
        yield c
    finally:
        assert not c.close(), "processes left behind"


def frames(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(n)]


def test_stream_yields_every_frame_in_order_equal_to_the_unsplit_model(cluster):
    raw = frames()
    with cluster.client() as client:
        results = list(mcdask.stream(client, "alexnet", raw))
    assert [r.frame for r in results] == list(range(len(raw))) and {r.status for r in results} == {"ok"}
    ref = reference_outputs("alexnet", list(mcdask.frames_of("alexnet", raw)))
    for r in results:
        assert np.abs(r.output - ref[r.frame]).max() <= 1e-5 * np.abs(ref[r.frame]).max()
        assert len(r.top5) == 5 and r.top5[0].id == int(np.argmax(ref[r.frame])) and r.latency_s > 0


def test_astream_works_with_an_asynchronous_client(cluster):
    from distributed import Client

    raw = frames(4)

    async def main():
        async with Client(cluster.address, asynchronous=True) as client:
            return [r async for r in mcdask.astream(client, "alexnet", raw)]

    async def first_only():
        async with Client(cluster.address, asynchronous=True) as client:
            async for r in mcdask.astream(client, "alexnet", frames(30)):
                return r       # leaving early stops the stream; nothing hangs

    results = asyncio.run(main())
    assert asyncio.run(first_only()).frame == 0
    ref = reference_outputs("alexnet", list(mcdask.frames_of("alexnet", raw)))
    assert [r.frame for r in results] == [0, 1, 2, 3]
    assert all(np.abs(r.output - ref[r.frame]).max() <= 1e-5 * np.abs(ref[r.frame]).max() for r in results)


def test_a_packaged_plan_and_a_bad_plan_name(cluster):
    with cluster.client() as client:
        with pytest.raises(mcdask.errors.PlanError, match="neither a plan file nor a packaged plan"):
            list(mcdask.stream(client, "alexnet", frames(1), plan="alexnet-99dev"))


def test_the_example_streams_a_video_file(cluster, tmp_path):
    video = tmp_path / "clip.mp4"
    _video(video, frames=8)
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "stream_video.py"), str(video),
                        "--scheduler", cluster.address], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    assert [int(x[0]) for x in lines] == list(range(8)) and {x[1] for x in lines} == {"ok"}
    assert "Traceback" not in r.stderr


def test_items_for_and_frames_of_agree():
    """The API's frame reader is the sources' Feeder: same items as the tests' helper."""
    a = items_for(W, 3)
    b = list(mcdask.frames_of(W, "synthetic", limit=3))
    assert all(np.array_equal(x.inputs["frame"], y.inputs["frame"]) for x, y in zip(a, b))
