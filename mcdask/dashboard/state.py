"""What the dashboard shows, kept in the scheduler: one JSON-able snapshot.

``SwarmState`` holds what the scheduler cannot see for itself, the figures each stream
publishes (by stream id, so several streams at once are told apart); ``snapshot`` joins them
with what it can: the deployment in its metadata (``("mcdask", "deployment")``: plan and
binding device -> worker name) and each bound worker's ``WorkerState`` (cpu, memory,
executing tasks, memory limit). The page, ``mcdask status`` and the Prometheus gauges all read
the same snapshot.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from mcdask.runtime.plugin import METADATA_KEY

MAX_STREAMS = 16        # streams remembered (the oldest finished one goes first)
LIVE_S = 5.0            # a stream not heard from for this long is shown as gone
HISTORY = 240           # IPS points kept per stream (about 3 min at one publish per 0.75 s)


class SwarmState:
    """Per-stream figures as the clients publish them."""

    def __init__(self):
        self.streams: dict[str, dict] = {}
        self.history: dict[str, deque] = {}

    def publish(self, figures: dict) -> dict | None:
        """Keep one stream's latest figures; returns the previous ones (for counting deltas)."""
        sid = str(figures.get("stream", "?"))
        previous = self.streams.get(sid)
        kept = {k: v for k, v in figures.items() if k != "new_latencies"}
        kept["received_at"] = time.time()
        self.streams[sid] = kept
        self.history.setdefault(sid, deque(maxlen=HISTORY)).append((kept["received_at"], figures.get("ips") or 0.0))
        while len(self.streams) > MAX_STREAMS:
            old = min(self.streams, key=lambda s: (not self.streams[s].get("done"), self.streams[s]["received_at"]))
            self.streams.pop(old)
            self.history.pop(old, None)
        return previous

    def stream_list(self) -> list[dict]:
        now = time.time()
        out = []
        for sid, st in sorted(self.streams.items(), key=lambda kv: -kv[1]["received_at"]):
            live = not st.get("done") and now - st["received_at"] < LIVE_S
            out.append({**st, "live": live, "age_s": round(now - st["received_at"], 2),
                        "ips_history": [[round(t, 2), round(v, 3)] for t, v in self.history.get(sid, ())]})
        return out


def _bottleneck_device(plan: dict, devices: list[str]) -> str | None:
    """The device the plan's prediction names as its bottleneck ("compute d3 (...)")."""
    text = str((plan.get("predicted") or {}).get("bottleneck") or "")
    if text.startswith("compute "):
        name = text[len("compute "):].split(" ", 1)[0]
        return name if name in devices else None
    return None


def _pieces(plan_dict: dict) -> dict[str, list[str]]:
    """device -> labels of the pieces it holds (``conv1..flatten``, ``fc1[0:1500]``)."""
    import workloads
    from mcdask.model.plan import Plan, stage_label

    try:   # through JSON: the metadata may hold tuples where a plan file holds lists
        plan = Plan.from_dict(json.loads(json.dumps(plan_dict)))
    except Exception:   # a plan this scheduler cannot read: no piece names, the rest still shows
        return {}
    try:
        w = workloads.get(plan.workload)
    except Exception:   # a workload this scheduler does not know: name pieces by index
        return {d: [f"s{si}p{hi}" for si, hi in plan.tasks_of(d)] for d in plan.devices}
    return {d: [stage_label(w, plan.stages[si], hi) for si, hi in plan.tasks_of(d)]
            for d in plan.devices}


_PIECES_CACHE: dict[str, dict[str, list[str]]] = {}


def snapshot(scheduler, swarm: SwarmState | None) -> dict[str, Any]:
    """Everything the page shows, as plain data."""
    dep = scheduler.get_metadata(keys=list(METADATA_KEY), default=None)
    by_name = {str(ws.name): ws for ws in scheduler.workers.values()}
    out: dict[str, Any] = {"time": time.time(), "workers": len(scheduler.workers), "deployment": None,
                           "devices": [], "streams": swarm.stream_list() if swarm else []}
    if not dep:
        return out
    plan = dep.get("plan") or {}
    binding = dep.get("binding") or {}
    devices = list(plan.get("devices") or binding)
    if dep.get("id") not in _PIECES_CACHE:
        _PIECES_CACHE.clear()
        _PIECES_CACHE[dep.get("id")] = _pieces(plan) if plan else {}
    pieces = _PIECES_CACHE[dep.get("id")]
    predicted = plan.get("predicted") or {}
    neck = _bottleneck_device(plan, devices)
    out["deployment"] = {"id": dep.get("id"), "plan_id": dep.get("plan_id"), "workload": plan.get("workload"),
                         "strategy": plan.get("strategy"), "binding": binding, "predicted": predicted,
                         "bottleneck_device": neck}
    for d in devices:
        name = binding.get(d)
        ws = by_name.get(str(name))
        m = ws.metrics if ws is not None else {}
        cpu = float(m.get("cpu") or 0.0)
        out["devices"].append({
            "device": d, "worker": name, "address": ws.address if ws is not None else None,
            "present": ws is not None, "pieces": pieces.get(d, []),
            "utilisation": round(cpu / 100.0, 3),
            "executing": len(ws.processing) if ws is not None else 0,
            "memory_bytes": int(m.get("memory") or 0),
            "memory_limit_bytes": int(ws.memory_limit or 0) if ws is not None else 0,
            "predicted_memory_bytes": int((predicted.get("memory_bytes") or {}).get(d, 0)),
            "bottleneck": d == neck,
        })
    return out
