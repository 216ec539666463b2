"""How long a bench row streams: long enough that this host's own speed swings average out.

A row's IPS is only as steady as the host under it. On this 2-core VM one thread's whole-AlexNet
rate, on an otherwise idle host, swings with the window it is averaged over (`python -m
bench.host_noise --seconds 240 --windows 1,3,10,30,60`, ``bench/results/host-noise.json``):
max/min of the windows' mean times 2.10 over 1-s windows, 1.74 over 3 s, 1.49 over 10 s, 1.27
over 30 s, 1.18 over 60 s. A row of 100 AlexNet frames on 12 devices lasts about 4 s. So a row
streams at least ``min_seconds`` of steady state at its plan's predicted rate (``frames_for``);
the synthetic source's frames are reused in turn past the ones generated (``cycled``): a CNN's
time does not depend on the pixel values, and the frames in flight stay distinct objects on the
wire.
"""

from __future__ import annotations

import math

from mcdask.streaming.records import Item

#: seconds of steady state a row streams at least, unless told otherwise
MIN_SECONDS = 30.0
#: ``mcdask.streaming.records.steady_ips`` leaves out this share of the answers (pipeline fill)
STEADY_SKIP = 0.2


def frames_for(frames: int, predicted_ips: float | None, min_seconds: float) -> int:
    """At least ``frames``, and enough for ``min_seconds`` of steady state at ``predicted_ips``
    (the farm's rate: Pi speed times the time scale)."""
    if not min_seconds or not predicted_ips:
        return frames
    return max(frames, math.ceil(min_seconds * predicted_ips / (1 - STEADY_SKIP)))


def cycled(items: list[Item], count: int) -> list[Item]:
    """``count`` items: ``items``, then their runnable ones again in turn, numbered on."""
    if count <= len(items):
        return items[:count]
    body = [it for it in items if it.inputs is not None and not (it.warmup or it.dropped or it.error)]
    if not body:
        raise ValueError("no runnable frame to repeat")
    start = len(items)
    return items + [Item(start + j, body[j % len(body)].inputs) for j in range(count - start)]
