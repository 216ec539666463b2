"""Shared test helpers: random valid plans and frame items."""

from __future__ import annotations

import numpy as np

from mcdask.model.plan import Plan, Shard, Stage
from mcdask.streaming.sources import Feeder, open_source


def items_for(workload, frames: int, seed: int = 0):
    return list(Feeder(workload).items(open_source("synthetic", workload, seed), frames))


def random_plan(workload, rng: np.random.Generator, max_stages: int = 6,
                max_prefix_bytes: int = 100_000_000) -> Plan:
    """A random valid plan: 1..6 stages (windowed layers always start one), dense stage ends
    split into k = 2..4 shards at random unit boundaries, other stages 1..3 replicas.

    Every shard of a split stage holds the layers before the split whole; stages whose
    prefix weighs more than ``max_prefix_bytes`` are not split, to keep k copies of, say,
    VGG16's fc1 out of one test process."""
    n = len(workload.layers)
    forced = [i for i in range(1, n) if workload.cut_required(i)]
    free = [i for i in range(1, n) if i not in forced]
    extra = int(rng.integers(0, max(1, max_stages - len(forced))))
    cuts = sorted(set(forced) | set(rng.choice(free, size=min(extra, len(free)), replace=False).tolist()))
    bounds = [0] + cuts + [n]
    stages, devices = [], []

    def new_devices(k):
        names = [f"d{len(devices) + j}" for j in range(k)]
        devices.extend(names)
        return tuple(names)

    for a, b in zip(bounds, bounds[1:]):
        last = workload.layers[b - 1]
        prefix = sum(l.param_bytes for l in workload.layers[a:b - 1])
        if (last.splittable and workload.stage_outputs(a, b) == [last.name] and prefix <= max_prefix_bytes
                and rng.random() < 0.7):
            k = int(rng.integers(2, 5))
            edges = np.sort(rng.choice(np.arange(1, last.units), size=k - 1, replace=False))
            units = [0, *edges.tolist(), last.units]
            shards = tuple(Shard((units[j], units[j + 1]), new_devices(1)) for j in range(k))
        else:
            shards = (Shard(None, new_devices(int(rng.integers(1, 4)))),)
        stages.append(Stage(a, b, shards))
    return Plan(workload.name, tuple(devices), tuple(stages), "random")
