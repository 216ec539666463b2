"""Stock `dask scheduler` and `dask worker` processes (no extra flags) driven by `mcdask run`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _die_with_pytest() -> None:
    """In the child: get SIGTERM if this test process dies, even by SIGKILL, so no stock
    scheduler or worker outlives a killed test run."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    from distributed import Client

    cwd = tmp_path_factory.mktemp("cluster")
    addr = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "MCDASK_TEST": "1"}
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", addr.rsplit(":", 1)[1],
                               "--dashboard-address", ":0"], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(cwd / "scheduler.log", "w"),
                              start_new_session=True, preexec_fn=_die_with_pytest)]
    time.sleep(2)
    for i in range(3):
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", addr], cwd=cwd, env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(cwd / f"worker{i}.log", "w"),
                                      start_new_session=True, preexec_fn=_die_with_pytest))
    try:
        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(3, timeout=120)
        yield addr, cwd
    finally:
        pids = [p.pid for p in procs]
        family = [c for p in procs if psutil.pid_exists(p.pid) for c in psutil.Process(p.pid).children(recursive=True)]
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        psutil.wait_procs(family, timeout=30)
        left = [pid for pid in pids + [c.pid for c in family] if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert not left, f"processes left behind: {left}"


def mcdask(*args, timeout=600):
    r = subprocess.run([str(BIN / "mcdask"), *args], capture_output=True, text=True, timeout=timeout)
    return r


def test_run_synthetic_equals_unsplit_model(scheduler, tmp_path):
    addr, _ = scheduler
    out = tmp_path / "results.jsonl"
    r = mcdask("run", "--scheduler", addr, "--workload", "alexnet", "--source", "synthetic", "--frames", "20",
               "--out", str(out), "--check", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["equal"] is True and summary["checked"] == 20
    assert summary["devices"] == 3 and summary["frames"] == 20 and summary["ips"] > 0
    assert summary["max_abs_diff"] <= 1e-5 * summary["output_scale"]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(20))
    assert all(len(x["top5"]) == 5 and x["latency_s"] > 0 for x in lines)
    scores = [t["score"] for t in lines[0]["top5"]]
    assert scores == sorted(scores, reverse=True)


def test_run_action_on_a_real_video(scheduler, tmp_path):
    """A real encoded video: decoded by PyAV, optical flow by OpenCV on the client."""
    import av

    addr, _ = scheduler
    path = tmp_path / "walk.mp4"
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 72, "yuv420p"
        for i in range(40):
            img = np.ascontiguousarray(texture[i:i + 72, 2 * i:2 * i + 96])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    r = mcdask("run", "--scheduler", addr, "--workload", "action", "--source", str(path), "--check", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 40 and summary["warmup"] == 34 and summary["classified"] == 6
    assert summary["equal"] is True


def test_run_folder_of_images_and_bad_sources(scheduler, tmp_path):
    import cv2

    addr, _ = scheduler
    rng = np.random.default_rng(1)
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"img{i:02d}.png"), rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    r = mcdask("run", "--scheduler", addr, "--workload", "vgg16", "--source", str(tmp_path), "--check", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["classified"] == 4 and summary["equal"] is True

    r = mcdask("run", "--scheduler", addr, "--workload", "alexnet", "--source", str(tmp_path / "missing.mp4"))
    assert r.returncode != 0
    assert "not 'synthetic', 'camera:INDEX', a video file or a folder of images" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = mcdask("run", "--scheduler", addr, "--workload", "alexnet", "--source", str(empty))
    assert r.returncode != 0 and "holds no images" in r.stderr
