"""The client side of the dashboard: a stream's figures, sent to the scheduler now and then.

A ``Publisher`` is fed by ``mcdask.commands.stream_through``: ``reading`` wraps the frame
source (to count frames read), ``record`` takes each answer. A daemon thread sends a summary
every ``interval_s`` through the ``mcdask_publish`` scheduler handler (registered by the
dashboard plugin). Sending never blocks the stream: the thread waits at most ``timeout_s``
per send, and a failure is logged once at debug level, then ignored. Memory is bounded: a
rolling window of recent answers and at most ``MAX_LATENCIES`` latencies per send.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

logger = logging.getLogger("mcdask.dashboard.publish")

PUBLISH_HANDLER = "mcdask_publish"
MAX_LATENCIES = 2000     # latencies sent per publish at most (the histogram's input)
MAX_EVENTS = 50          # the last events sent with each publish
STATUSES = ("ok", "error", "dropped", "warmup")


def enabled() -> bool:
    """``mcdask.dashboard.enabled`` (default true; ``DASK_MCDASK__DASHBOARD__ENABLED=false``
    turns off the publisher and the scheduler plugin, e.g. to measure what they cost)."""
    import dask.config

    return bool(dask.config.get("mcdask.dashboard.enabled", True))


def stream_id(workload: str) -> str:
    """A name telling this stream apart from others on the same scheduler."""
    return f"{workload}@{socket.gethostname()}:{os.getpid()}-{uuid.uuid4().hex[:4]}"


class Publisher:
    """Counts a stream's frames and sends its figures to the scheduler every ``interval_s``."""

    def __init__(self, client, workload: str, *, plan_id: Callable[[], str] | None = None,
                 events=None, interval_s: float = 0.75, window_s: float = 10.0, timeout_s: float = 2.0):
        self.client, self.workload = client, workload
        self.id = stream_id(workload)
        self._plan_id = plan_id or (lambda: "")
        self._events = events
        self.interval_s, self.window_s, self.timeout_s = interval_s, window_s, timeout_s
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(STATUSES, 0)
        self.read = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=5000)   # (done_at, latency_s)
        self._new_latencies: list[float] = []
        self._stop = threading.Event()
        self._failed = False
        self._thread: threading.Thread | None = None
        self.t0 = time.perf_counter()

    def start(self) -> Publisher:
        if not enabled():
            self._stop.set()
            self._failed = True
            return self
        self._thread = threading.Thread(target=self._loop, name=f"mcdask-publish-{self.id}", daemon=True)
        self._thread.start()
        return self

    def reading(self, items: Iterable) -> Iterator:
        """``items``, counting each frame as the stream reads it (frames in flight = read - answered)."""
        for item in items:
            self.read += 1
            yield item

    def record(self, rec) -> None:
        """One answer from the stream (a ``Record``): cheap, never blocks."""
        with self._lock:
            self.counts[rec.status] = self.counts.get(rec.status, 0) + 1
            if rec.status == "ok" and rec.latency_s is not None:
                self._recent.append((rec.done_at or time.perf_counter(), rec.latency_s))
                if len(self._new_latencies) < MAX_LATENCIES:
                    self._new_latencies.append(rec.latency_s)

    def figures(self, done: bool = False) -> dict:
        """What the scheduler keeps about this stream (and clears the latencies sent)."""
        now = time.perf_counter()
        with self._lock:
            recent = [(t, lat) for t, lat in self._recent if t >= now - self.window_s]
            new, self._new_latencies = self._new_latencies, []
            counts = dict(self.counts)
        answered = sum(counts.values())
        lat = sorted(x for _, x in recent)
        if len(recent) >= 2:
            span = max(recent[-1][0] - recent[0][0], 1e-9)
            ips = (len(recent) - 1) / span if not done else len(recent) / max(now - recent[0][0], span)
        else:
            ips = 0.0
        pct = (lambda q: float(np.percentile(lat, q))) if lat else (lambda q: None)
        events = self._events.to_list()[-MAX_EVENTS:] if self._events is not None else []
        return {"stream": self.id, "workload": self.workload, "plan_id": self._plan_id(), "frames": counts,
                "ips": ips, "latency_p50_s": pct(50), "latency_p99_s": pct(99), "window_s": self.window_s,
                "in_flight": max(0, self.read - answered), "elapsed_s": now - self.t0, "events": events,
                "new_latencies": new, "done": done, "sent_at": time.time()}

    def _send(self, figures: dict) -> None:
        if not enabled():
            return
        async def go():
            import asyncio
            handler = getattr(self.client.scheduler, PUBLISH_HANDLER)
            await asyncio.wait_for(handler(figures=figures), self.timeout_s)
        try:
            self.client.sync(go)
        except Exception as e:   # the dashboard is optional: say it once, never stop the stream
            if not self._failed:
                logger.debug("mcdask: publishing stream figures failed (%s: %s); not saying it again",
                             type(e).__name__, e)
            self._failed = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._send(self.figures())

    def close(self) -> None:
        """Stop the thread and send the final figures (so the scheduler's counts are exact)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)
        self._send(self.figures(done=True))
