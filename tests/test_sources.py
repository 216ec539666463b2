"""Sources with bad frames in the middle: each bad frame is one error record naming it, and
the good frames around it come out (no traceback, no aborted stream). A source that does not
open, or whose first frame does not decode, stops `mcdask run` in one line before it connects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import workloads
from mcdask.streaming.sources import BadFrame, Feeder, image_frames, video_frames

W = workloads.get("alexnet")


def test_a_corrupt_image_among_good_ones_is_one_error_record(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    (tmp_path / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    items = list(Feeder(W).items(image_frames(str(tmp_path))))
    assert [it.frame for it in items] == [0, 1, 2, 3]
    assert [it.error is None for it in items] == [True, True, False, True]
    assert "cannot decode image img2.png" in items[2].error
    assert items[3].inputs["frame"].shape == (1, 220, 220, 3)


def _video(path, frames: int = 30):
    import av

    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(__import__("av").VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_video_corrupt_in_the_middle_keeps_its_good_frames(tmp_path):
    path = tmp_path / "v.avi"
    _video(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = bytes(4000)          # zeros over a stretch of packets
    path.write_bytes(bytes(data))
    got = list(video_frames(str(path)))
    good = [f for f in got if isinstance(f, np.ndarray)]
    assert 0 < len(good) < 30 + 1
    assert all(f.shape == (48, 64, 3) for f in good)
    items = list(Feeder(W).items(iter(got)))
    assert [it.frame for it in items] == list(range(len(got)))
    assert all(it.error.startswith(f"frame {it.frame}: ") for it in items if it.error)
    assert all(isinstance(f, (np.ndarray, BadFrame)) for f in got)


def test_a_truncated_video_says_how_many_frames_it_had(tmp_path, caplog):
    path = tmp_path / "v.mkv"
    _video(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with caplog.at_level("WARNING", logger="mcdask.events"):
        got = list(video_frames(str(path)))
    assert 0 < sum(isinstance(f, np.ndarray) for f in got) < 30
    decoded = sum(isinstance(f, np.ndarray) for f in got)
    said = [r.getMessage() for r in caplog.records]
    assert any(f"ended after {decoded} of the 30 frames its header declares" in m for m in said), said


def _run_on(source: str) -> subprocess.CompletedProcess:
    """`mcdask run` with a scheduler address nobody answers: the source must fail first."""
    return subprocess.run([str(Path(sys.executable).parent / "mcdask"), "run", "--scheduler", "tcp://127.0.0.1:1",
                           "--workload", "alexnet", "--source", source], capture_output=True, text=True, timeout=120)


def test_a_source_that_does_not_open_stops_the_run_before_it_connects(tmp_path):
    bad_video = tmp_path / "clip.mp4"
    bad_video.write_bytes(b"\x00" * 100)
    r = _run_on(str(bad_video))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "no scheduler answers" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1].startswith(f"Error: cannot open video {str(bad_video)!r}"), r.stderr


def test_a_source_whose_first_frame_does_not_decode_stops_the_run_before_it_connects(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    r = _run_on(str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "no scheduler answers" not in r.stderr, r.stderr
    # (OpenCV may say why on a line of its own before ours)
    assert r.stderr.splitlines()[-1] == "Error: the source's first frame is unusable: cannot decode image a.png"
