"""Stock `dask scheduler` and `dask worker` processes (no extra flags) driven by `mcdask run`."""

import json
import subprocess

import numpy as np
import pytest
from stock import BIN, StockCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cluster")
    cluster = StockCluster(cwd)
    cluster.start_scheduler()
    try:
        for i in range(3):
            cluster.start_plain_worker(f"worker{i}")
        cluster.wait_for(3)
        yield cluster.address, cwd
    finally:
        assert not cluster.close(), "processes left behind"


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


def test_run_takes_your_own_keras_model(scheduler, tmp_path):
    """`mcdask run --model FILE.keras` on stock workers: the devices learn the model from the
    deployment, read its weights from the file, and the answers equal Keras's own predict."""
    from test_keras_model import small_cnn

    address, _ = scheduler
    path = tmp_path / "mine.keras"
    small_cnn(512).save(path)
    r = mcdask("run", "--scheduler", address, "--model", str(path), "--frames", "6", "--check", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["workload"] == "smallcnn" and summary["classified"] == 6 and summary["equal"] is True
    assert summary["keras"]["checked"] == 6 and summary["keras"]["equal"] is True
    r = mcdask("run", "--scheduler", address, "--model", str(path), "--workload", "alexnet")
    assert r.returncode == 2 and "give one of --workload" in r.stderr and "Traceback" not in r.stderr


def test_dynamic_batching_takes_the_backlog_k_at_a_time_and_equals_the_unsplit_model(scheduler, tmp_path):
    """A file source replayed as fast as the devices take it is a backlog: tasks fill to K."""
    addr, _ = scheduler
    out = tmp_path / "results.jsonl"
    r = mcdask("run", "--scheduler", addr, "-w", "alexnet", "--frames", "24", "--max-batch", "4", "--check",
               "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["equal"] is True and summary["checked"] == 24 and summary["classified"] == 24
    assert summary["max_batch"] == 4 and summary["batches"] < 24 and summary["mean_batch"] > 1, summary
    assert sum(int(k) * n for k, n in summary["batch_sizes"].items()) == 24
    assert [json.loads(x)["frame"] for x in out.read_text().splitlines()] == list(range(24))
    r = mcdask("run", "--scheduler", addr, "-w", "action", "--frames", "4", "--max-batch", "4")
    assert r.returncode == 1 and "dynamic batching does not take action" in r.stderr and "Traceback" not in r.stderr
