"""Sources with bad frames in the middle: each bad frame is one error record naming it, and
the good frames around it come out (no traceback, no aborted stream)."""

from __future__ import annotations

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
