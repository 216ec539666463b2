"""Per-piece facts of the cost model (``mcdask.planning.costmodel``): the unit ranges of a
split layer's shards, a piece's time and memory on a device kind, and the bytes of one frame's
export on the wire. Pure arithmetic; imports neither TensorFlow nor Dask.
"""

from __future__ import annotations

import math

from mcdask.errors import PlanError

#: bytes per value of a workload input on the wire (uint8 frames; mcdask.runtime.slices.prepare_input)
INPUT_BYTES_PER_VALUE = 1
#: bytes per value of a layer output (float32)
FLOAT_BYTES = 4


def shard_units(total: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous unit ranges ``[a, b)`` tiling ``[0, total)``; the first ``total % k``
    are one unit larger."""
    if not 1 <= k <= total:
        raise PlanError(f"cannot split {total} units into {k} shards")
    base, extra = divmod(total, k)
    out, a = [], 0
    for h in range(k):
        b = a + base + (1 if h < extra else 0)
        out.append((a, b))
        a = b
    return out


def piece_time_s(workload, kind, start: int, end: int, units: tuple[int, int] | None = None) -> float:
    """Seconds per frame for layers ``[start, end)`` on ``kind``; ``units`` splits the last."""
    t = 0.0
    for i in range(start, end):
        layer = workload.layers[i]
        u = units[1] - units[0] if (units is not None and i == end - 1) else None
        t += kind.time_s(workload.name, layer, u)
    return t


def message_bytes(workload, name: str, units: tuple[int, int] | None = None) -> int:
    """Bytes of one frame's ``name`` on the wire (a shard's part if ``units``)."""
    if name in workload.inputs:
        return math.prod(workload.inputs[name]) * INPUT_BYTES_PER_VALUE
    layer = workload.layer(name)
    if units is not None:
        return (units[1] - units[0]) * FLOAT_BYTES * math.prod(layer.output_shape[:-1])
    return layer.activation_bytes


def piece_memory_bytes(workload, kind, start: int, end: int, units: tuple[int, int] | None = None) -> int:
    """Weights plus one frame of activation buffers of layers ``[start, end)`` on ``kind``."""
    total = 0
    for x in workload.stage_inputs(start, end):
        window = max((workload.window_of(workload.layers[i].name, x) for i in range(start, end)
                      if x in workload.layers[i].inputs), default=1)
        total += math.prod(workload.shape_of(x)) * FLOAT_BYTES * window
    for i in range(start, end):
        layer = workload.layers[i]
        u = units if (units is not None and i == end - 1) else None
        total += kind.weight_memory_bytes(workload.name, layer, None if u is None else u[1] - u[0])
        total += message_bytes(workload, layer.name, u)
    return total
