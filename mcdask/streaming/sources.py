"""Frame sources and per-workload preprocessing.

A source yields RGB ``uint8`` frames ``(height, width, 3)``: ``synthetic``, a video file
(decoded with PyAV), a folder of images (OpenCV), or ``camera:INDEX`` (OpenCV). ``Feeder``
turns frames into a workload's inputs: resized ``uint8`` frames (normalised on the worker)
and, for action recognition, the dense optical flow (OpenCV Farneback) of the last
``FLOW_STACK`` frame pairs, computed here on the device that reads the video.
"""

from __future__ import annotations

import glob
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcdask.errors import SourceError
from mcdask.streaming.records import Item

logger = logging.getLogger("mcdask.events")

#: stands in a frame sequence for a frame skipped under overload (see ``latest``)
DROPPED = object()
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


def synthetic(height: int, width: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Endless frames: a fixed random texture drifting one pixel per frame, plus noise
    (so optical flow has something to find)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    for i in itertools.count():
        dy, dx = i % height, (2 * i) % width
        frame = base[dy:dy + height, dx:dx + width].copy()
        noise = rng.integers(0, 8, frame.shape, dtype=np.uint8)
        yield np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class BadFrame:
    """Stands in a frame sequence for a frame the source could not decode: the stream makes it
    an ``error`` record and goes on with the frames after it."""

    reason: str


def video_frames(path: str) -> Iterator[np.ndarray | BadFrame]:
    """The video's frames, packet by packet: a packet that does not decode is a ``BadFrame``;
    a video that ends before the frame count its header declares says so (a warning)."""
    import av

    try:
        container = av.open(path)
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise SourceError(f"cannot open video {path!r}: {e}") from None
    expected = _declared_frames(container, stream)
    decoded = 0
    with container:
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    yield BadFrame(f"undecodable video data at {packet.pts} ({e})")
                    continue
                for frame in frames:
                    decoded += 1
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:   # the container itself breaks off
            yield BadFrame(f"the video breaks off after {decoded} frames ({e})")
    if expected and decoded < expected:
        logger.warning("mcdask: video %s ended after %d of the %d frames its header declares", path, decoded,
                       expected)


def _declared_frames(container, stream) -> int:
    """Frames the container says the video has: its frame count, else duration x frame rate."""
    if stream.frames:
        return int(stream.frames)
    if container.duration and stream.average_rate:
        return round(container.duration / 1e6 * float(stream.average_rate))
    return 0


def image_files(spec: str) -> list[Path]:
    """The images of a folder, or the files a glob pattern (``photos/*.jpg``) matches, in name
    order; SourceError when there is none."""
    if Path(spec).is_dir():
        files = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"folder {spec!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    files = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    if not files:
        raise SourceError(f"pattern {spec!r} matches no file")
    return files


def is_glob(spec: str) -> bool:
    return glob.has_magic(spec) and not Path(spec).exists()


def frame_count(spec: str) -> int | None:
    """How many frames source ``spec`` holds, when it says: images of a folder or a pattern,
    a video's declared frames; None for synthetic, a camera or a video that does not say."""
    if Path(spec).is_dir() or is_glob(spec):
        return len(image_files(spec))
    if Path(spec).is_file():
        import av

        try:
            with av.open(spec) as container:
                return _declared_frames(container, container.streams.video[0]) or None
        except (av.error.FFmpegError, IndexError, OSError):
            return None
    return None


def image_frames(spec: str) -> Iterator[np.ndarray | BadFrame]:
    """The images of a folder or a glob pattern (``image_files``); one that does not decode is
    a ``BadFrame``."""
    import cv2

    for p in image_files(spec):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None or img.size == 0:
            yield BadFrame(f"cannot decode image {p.name}")
            continue
        yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def camera_frames(index: int) -> Iterator[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise SourceError(f"cannot open camera {index}")
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def open_source(spec: str, workload, seed: int = 0) -> Iterator[np.ndarray | BadFrame]:
    """Frames from ``spec``: ``synthetic``, ``camera:INDEX``, a video file, an image folder or a
    glob pattern of images."""
    if spec == "synthetic":
        h, w, _ = workload.inputs[workload.image_input]
        return synthetic(h, w, seed)
    if spec.startswith("camera:"):
        try:
            return camera_frames(int(spec.split(":", 1)[1]))
        except ValueError:
            raise SourceError(f"camera source must be camera:INDEX, got {spec!r}") from None
    p = Path(spec)
    if p.is_dir() or is_glob(spec):
        return image_frames(spec)
    if p.is_file():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            raise SourceError(f"{spec!r} is one image; pass the folder that holds the images")
        return video_frames(spec)
    raise SourceError(f"source {spec!r}: not 'synthetic', 'camera:INDEX', a video file or a folder of images, "
                      "nor a pattern matching images (photos/*.jpg)")


def opened(frames: Iterable) -> Iterator:
    """``frames`` with the first one read now: a source that cannot open, gives nothing or
    whose first frame does not decode raises SourceError here, before anything is deployed."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise SourceError("the source gave no frame")
    if isinstance(first, BadFrame):
        raise SourceError(f"the source's first frame is unusable: {first.reason}")
    return itertools.chain([first], it)


def paced(frames: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
    """``frames`` at ``fps`` frames per second, as a camera delivers them (for replaying a
    file or synthetic frames as a live source)."""
    period, due = 1.0 / fps, time.monotonic()
    for frame in frames:
        due += period
        time.sleep(max(0.0, due - time.monotonic()))
        yield frame


def latest(frames: Iterable[np.ndarray], waiting: int = 2, idle_s: float = 30.0) -> Iterator:
    """The ``drop`` overload policy: read ``frames`` on a thread as fast as the source gives
    them and keep at most ``waiting`` of them for the stream; a frame that finds them all
    still waiting is skipped, and ``DROPPED`` stands in its place, so indices stay those of
    the source (the paper lowers the sampling rate the same way). A source that gives nothing
    for ``idle_s`` raises SourceError."""
    q: queue.Queue = queue.Queue(maxsize=waiting)
    end = object()
    failure: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        count = 0
        try:
            for frame in frames:
                if stop.is_set():
                    return
                try:
                    q.put_nowait((count, frame))
                except queue.Full:
                    pass   # dropped: the gap in indices says so
                count += 1
        except BaseException as e:  # noqa: BLE001 - handed to the reading side
            failure.append(e)
        while not stop.is_set():   # the end marker waits for room; the reader may have stopped
            try:
                q.put((count, end), timeout=0.5)
                break
            except queue.Full:
                continue

    threading.Thread(target=read, name="mcdask-source", daemon=True).start()
    expected = 0
    try:
        while True:
            try:
                i, frame = q.get(timeout=idle_s)
            except queue.Empty:
                raise SourceError(f"the source gave no frame for {idle_s:.0f} s") from None
            for _ in range(expected, i):
                yield DROPPED
            if frame is end:
                if failure:
                    raise failure[0]
                return
            expected = i + 1
            yield frame
    finally:
        stop.set()


class Feeder:
    """Raw RGB frames -> workload input items, in order."""

    def __init__(self, workload):
        import workloads

        self.workload = workload
        self.image, self.flow = workload.image_input, workload.input_with("flow")
        self.frame_shape = workload.inputs[self.image]
        self.flow_stack = workload.flow_stack
        self._flows: deque = deque(maxlen=self.flow_stack or 1)
        self._prev_gray = None
        self._workloads = workloads

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w, _ = self.frame_shape
        if rgb.shape[:2] == (h, w):
            return np.ascontiguousarray(rgb)
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)

    def item(self, index: int, raw) -> Item:
        if raw is DROPPED:
            return Item(index, dropped=True)
        if isinstance(raw, BadFrame):
            return Item(index, error=f"frame {index}: {raw.reason}")
        raw = np.asarray(raw)
        if raw.ndim != 3 or raw.shape[-1] != 3 or raw.dtype != np.uint8 or 0 in raw.shape:
            return Item(index, error=f"frame {index}: expected an RGB uint8 image (H, W, 3), "
                                      f"got shape {raw.shape} dtype {raw.dtype}")
        frame = self.resize(raw)
        if not self.flow_stack:
            return Item(index, {self.image: frame[None]})
        import cv2

        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if self._prev_gray is not None:
            # the output given, not None: OpenCV 5.0's stubs do not allow None there, 5.1's do
            flow = np.zeros((*gray.shape, 2), np.float32)   # float32 in, float32 out: no copy after
            self._flows.append(cv2.calcOpticalFlowFarneback(self._prev_gray, gray, flow, 0.5, 1, 5, 3, 5, 1.1, 0))
        self._prev_gray = gray
        if len(self._flows) < self.flow_stack:
            return Item(index, warmup=True)
        flow = np.concatenate(list(self._flows), axis=-1)
        return Item(index, {self.image: frame[None], self.flow: flow[None]})

    def items(self, frames: Iterable, limit: int | None = None) -> Iterator[Item]:
        for index, raw in enumerate(itertools.islice(frames, limit)):
            yield self.item(index, raw)
