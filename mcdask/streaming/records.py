"""What a stream reads and what it says: ``Item`` (one frame from a source), ``Record`` (one
answer, or why there is none), the checks a frame's inputs pass, and the figures of a run
(``Tally``: throughput, latency, the longest gap between answers) kept as records come."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mcdask.errors import FrameError


@dataclass
class Item:
    """One frame from a source: ``inputs`` (name -> array) or why there is nothing to run."""

    frame: int
    inputs: dict[str, np.ndarray] | None = None
    error: str | None = None          # bad input: reported, never submitted
    warmup: bool = False              # e.g. optical flow still needs earlier frames
    dropped: bool = False             # skipped at the source under overload


@dataclass
class Record:
    frame: int
    status: str                       # ok | warmup | error | dropped
    latency_s: float | None = None
    top5: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    output: np.ndarray | None = field(default=None, repr=False)
    done_at: float | None = field(default=None, repr=False)   # perf_counter when the answer was ready
    plan_id: str | None = None        # the plan whose tasks computed the answer
    attempts: int = 1                 # submissions it took (resubmitted after a switch or deadline)

    def to_dict(self, labels: Sequence[str] = ()) -> dict:
        """One line of ``--out``; each top-5 class with its ``label`` where ``labels`` names it."""
        d: dict[str, Any] = {"frame": self.frame, "status": self.status}
        if self.status == "ok":
            d["top5"] = [{"class": c, **({"label": labels[c]} if c < len(labels) else {}), "score": round(s, 6)}
                         for c, s in self.top5]
            d["latency_s"] = None if self.latency_s is None else round(self.latency_s, 6)
            d["plan"] = self.plan_id
            if self.attempts > 1:
                d["attempts"] = self.attempts
        if self.error:
            d["error"] = self.error
        return d


def top5(vec: np.ndarray) -> list[tuple[int, float]]:
    v = np.asarray(vec).reshape(-1)
    idx = np.argsort(-v, kind="stable")[:5]
    return [(int(i), float(v[i])) for i in idx]


def validate(workload, inputs: dict, batch: int = 1) -> dict[str, np.ndarray]:
    """Check one frame's inputs (or up to ``batch`` frames stacked on a first axis, batch
    mode); returns them with a batch axis. Raises FrameError."""
    if not isinstance(inputs, dict):
        inputs = {next(iter(workload.inputs)): inputs}
    out = {}
    for name, shape in workload.inputs.items():
        if name not in inputs:
            raise FrameError(f"input {name!r} missing; {workload.name} needs {sorted(workload.inputs)}")
        x = np.asarray(inputs[name])
        if x.shape == shape:
            x = x[None]
        if x.shape[1:] != shape or not 1 <= x.shape[0] <= batch:
            stacked = f"(or {(1,) + shape})" if batch == 1 else f"stacked, at most {batch} of them"
            raise FrameError(f"input {name!r} has shape {x.shape}, expected {shape} {stacked}")
        if x.dtype not in (np.uint8, np.float32, np.float64):
            raise FrameError(f"input {name!r} has dtype {x.dtype}, expected uint8 or float32")
        if x.dtype == np.float64:
            with np.errstate(over="ignore"):      # values beyond float32 become inf: caught next
                x = x.astype(np.float32)
        if x.dtype != np.uint8 and not np.isfinite(x).all():
            raise FrameError(f"input {name!r} contains NaN or infinite values (or beyond float32)")
        out[name] = x
    extra = set(inputs) - set(workload.inputs)
    if extra:
        raise FrameError(f"unknown inputs {sorted(extra, key=repr)}; {workload.name} takes {sorted(workload.inputs)}")
    return out


def steady_ips(done: Sequence[float], skip: float = 0.2) -> float | None:
    """Answers per second once the pipeline is full: the least-squares slope of answer count
    against completion time ``done``, over the answers after the first ``skip`` of them
    (pipeline fill left out). A slope, not first-to-last: replicas that finish in waves
    (9 conv replicas answering 9 frames at once) would otherwise count a window that starts
    mid-wave and ends on a wave, up to a wave too many."""
    done = sorted(done)[int(len(done) * skip):]
    n = len(done)
    if n < 3:
        return None
    t_mean = math.fsum(done) / n
    var = math.fsum((t - t_mean) ** 2 for t in done)
    if var <= 0:
        return None
    i_mean = (n - 1) / 2
    return math.fsum((t - t_mean) * (i - i_mean) for i, t in enumerate(done)) / var


def longest_gap_s(done: Sequence[float]) -> float | None:
    """The longest time between consecutive answers (a stall the user sees), by their
    completion times ``done``."""
    done = sorted(done)
    return max((b - a for a, b in zip(done, done[1:])), default=None)


class Tally:
    """A stream's figures, kept as each record comes and never the records themselves: counts,
    latency percentiles from a bounded sketch (DDSketch: within ``LATENCY_RELATIVE_ERROR`` of
    the latency at rank q x (n - 1), in at most 2048 buckets), and each answer's completion time
    (8 bytes an answer: steady IPS and the longest gap stay exact)."""

    LATENCY_RELATIVE_ERROR = 0.01

    def __init__(self) -> None:
        from ddsketch import LogCollapsingLowestDenseDDSketch

        self.counts = dict.fromkeys(("ok", "warmup", "error", "dropped"), 0)
        self.resubmitted = 0
        self.latency = LogCollapsingLowestDenseDDSketch(relative_accuracy=self.LATENCY_RELATIVE_ERROR,
                                                        bin_limit=2048)
        self.done = array("d")

    @classmethod
    def of(cls, records: Iterable[Record]) -> Tally:
        tally = cls()
        for r in records:
            tally.add(r)
        return tally

    def add(self, r: Record) -> None:
        self.counts[r.status] = self.counts.get(r.status, 0) + 1
        self.resubmitted += r.attempts > 1
        if r.status == "ok":
            if r.latency_s is not None:
                self.latency.add(max(r.latency_s, 0.0))
            if r.done_at is not None:
                self.done.append(r.done_at)

    def percentile(self, q: float) -> float | None:
        value = self.latency.get_quantile_value(q / 100)
        return None if value is None else float(value)

    def summary(self, wall_s: float) -> dict:
        """Throughput and latency of the stream so far (IPS counts frames classified)."""
        ok = self.counts["ok"]
        gap = longest_gap_s(self.done)
        return {"frames": sum(self.counts.values()), "classified": ok, "ips_steady": steady_ips(self.done),
                "warmup": self.counts["warmup"], "errors": self.counts["error"], "dropped": self.counts["dropped"],
                "resubmitted": self.resubmitted, "wall_s": wall_s, "ips": ok / wall_s if wall_s > 0 else 0.0,
                "latency_p50_s": self.percentile(50), "latency_p99_s": self.percentile(99),
                "longest_gap_s": None if gap is None else round(gap, 4)}


def summarize(records: Iterable[Record], wall_s: float) -> dict:
    """Throughput and latency of a finished stream (see ``Tally``)."""
    return Tally.of(records).summary(wall_s)
