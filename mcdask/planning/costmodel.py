"""Predict a plan's throughput, latency and memory per device from a profile. Pure arithmetic.

The model (one frame = one input; times in seconds per frame):

* **Piece time**: a piece is one shard of one stage on one device. Its time is the sum of its
  layers' profiled times on that device's kind; a split stage's last layer counts only the
  shard's units (``mcdask.model.profile`` gives the rules); plus the kind's ``task_overhead_s``
  once (the runtime runs one Dask task per piece per frame; 0 unless a profiler measured it).
* **Replicas** of a piece (data parallelism) share the frames in proportion to their speed:
  replica ``i`` takes the fraction ``f_i = (1/t_i) / sum_j (1/t_j)``, so the piece serves
  ``sum_j 1/t_j`` frames per second. Every shard of a split stage sees every frame.
* **Device busy time** per frame: the sum over the pieces it holds of ``f * t``. A device that
  holds several pieces is bounded by their total.
* **Messages**: every shard of a consumer stage receives each input it reads whole (a split
  stage gets one copy per shard); a split producer sends each shard's part (the consumer
  concatenates them: the merge). One message costs ``latency_s + bytes / bandwidth_Bps`` of
  the pair's link (nothing between pieces on one device). Layer outputs travel as float32,
  workload inputs (frames, flows) as uint8 (``mcdask.planning.pieces``), as the runtime sends
  them. A message from replica ``a`` to replica ``b`` happens for the fraction ``f_a * f_b``
  of frames; a windowed consumer (the temporal pyramid, window ``w``) needs every frame of its
  window, so replica ``b`` receives the fraction ``min(1, w * f_b)`` of all frames.
* **Runtime** per frame, per device: its runtime's costs (``mcdask.model.profile``):
  per task it runs ``runtime_task_s`` plus ``runtime_dependency_s`` per dependency (one per
  producer shard it reads, ``w`` for a windowed input), and per message it fetches or serves
  ``runtime_receive_s`` / ``runtime_send_s``, in the same expected counts as the messages (the
  names one producer shard exports travel in one message; a frame from the client travels in
  the task's own message). Added to the device's busy time: a piece's resource slot keeps the
  next task on the scheduler until this one is done, so this work is on the device's path.
* **Link busy time**: per unordered device pair, the sum of its messages' expected times. The
  client (frame source and result sink) is one resource: every frame it sends and every result
  it receives occupies it.
* **Shared hosts** (only for devices with a ``host`` in ``profile.host_cores``): a host's busy
  time per frame is the summed busy time of its plan devices plus the number of tasks per frame
  (one per shard of every stage) times ``profile.host_task_overhead_s[host]``, plus
  ``profile.host_frame_overhead_s[host]`` (the scheduler's and client's CPU), divided by its
  cores. ``evaluate`` reports it as a resource; the planner's search does not see it yet (its
  plans are still predicted with it).
* **Throughput**: ``ips = 1 / max(busy time over devices, links, the client and shared hosts)``;
  the argmax is the named bottleneck.
* **Latency** of a frame: along the stage graph, a shard starts when the last of its inputs has
  arrived (producer ready + expected transfer), takes its expected (fraction-weighted) time, and
  a stage is ready when its slowest shard is; plus the final transfer to the client. Branches
  (the action workload's two streams) run side by side.
* **Memory** per device: the kind's baseline once, plus per piece its weights (dense shards
  only their units) and one frame of activation buffers: its inputs (times the window) and
  every layer output it computes, all float32.

This module imports neither TensorFlow nor Dask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcdask.errors import PlanError, ProfileError
from mcdask.model.plan import Plan, Stage, stage_label
from mcdask.model.profile import CLIENT, Profile
from mcdask.planning.pieces import message_bytes, piece_memory_bytes, piece_time_s


def _fractions(times: list[float]) -> list[float]:
    if min(times) <= 0:
        return [1 / len(times)] * len(times)
    inv = [1 / t for t in times]
    s = sum(inv)
    return [x / s for x in inv]


# ---- the walk over stages (shared with the planner) -------------------------------------------

#: a ready time in max-plus form: {origin key: offset}; ready = max(value[key] + offset)
Ready = dict


def _shift(r: Ready, c: float) -> Ready:
    return {k: v + c for k, v in r.items()}


def _join(a: Ready, b: Ready) -> Ready:
    out = dict(a)
    for k, v in b.items():
        if k not in out or v > out[k]:
            out[k] = v
    return out


@dataclass
class Export:
    """How one name leaves its producer: per shard, the replicas ``(device, fraction)``, the
    bytes of that shard's part and when it is ready."""

    shards: tuple[tuple[tuple[str, float], ...], ...]
    nbytes: tuple[int, ...]
    ready: tuple[Ready, ...]
    #: the producer stage's first layer (-1: the client): names of one producer shard travel as one message
    source: int = -1


class Memo:
    """Caches of per-piece facts for one (workload, profile); walks may share one."""

    #: tasks (and messages) per frame of each piece: 1, or 1/K with K frames per task
    tasks_per_frame = 1.0

    def __init__(self, workload, profile: Profile):
        self.w = workload
        self.p = profile
        self._time: dict = {}
        self._mem: dict = {}
        self._io: dict = {}
        self._link: dict = {}

    def time(self, device: str, start: int, end: int, units) -> float:
        kind = self.p.kind_of(device)
        key = (kind.kind, start, end, units)
        if key not in self._time:
            self._time[key] = piece_time_s(self.w, kind, start, end, units) + kind.task_overhead_s
        return self._time[key]

    def memory(self, device: str, start: int, end: int, units) -> int:
        kind = self.p.kind_of(device)
        key = (kind.kind, start, end, units)
        if key not in self._mem:
            self._mem[key] = piece_memory_bytes(self.w, kind, start, end, units)
        return self._mem[key]

    def io(self, start: int, end: int) -> tuple[list[tuple[str, int]], list[str]]:
        """(inputs with their windows, outputs) of layers ``[start, end)``."""
        key = (start, end)
        if key not in self._io:
            w = self.w
            ins = [(x, max((w.window_of(w.layers[i].name, x) for i in range(start, end)
                            if x in w.layers[i].inputs), default=1)) for x in w.stage_inputs(start, end)]
            self._io[key] = (ins, w.stage_outputs(start, end))
        return self._io[key]

    def transfer(self, a: str, b: str, nbytes: int) -> float:
        key = (a, b, nbytes)
        if key not in self._link:
            self._link[key] = self.p.transfer_s(a, b, nbytes)
        return self._link[key]


class Walk:
    """Accumulates busy times, memory and ready times stage by stage.

    ``exports`` maps names to :class:`Export`; start it with the workload inputs (from the
    client, ready at 0) or, in the planner, with symbolic ready times of open producers.
    """

    def __init__(self, workload, profile: Profile, exports: dict[str, Export] | None = None,
                 memo: Memo | None = None, track: bool = True):
        self.w = workload
        self.track = track  # memory and task labels (the planner checks memory itself)
        self.p = profile
        self.m = memo or Memo(workload, profile)
        self.compute: dict[str, float] = {}
        self.links: dict[tuple[str, str], float] = {}
        self.client = 0.0
        self.memory: dict[str, int] = {}
        self.tasks: dict[str, list[str]] = {}
        self.stage_time: list[float] = []
        if exports is None:
            exports = {x: Export((((CLIENT, 1.0),),), (message_bytes(workload, x),), ({"origin": 0.0},))
                       for x in workload.inputs}
        self.exports = exports

    def _message(self, a: str, b: str, weight: float) -> None:
        """A message from ``a`` to ``b`` for the fraction ``weight`` of frames: what it costs
        the devices at its ends (the bytes are ``_send``'s)."""
        if a == b or weight == 0 or a == CLIENT:
            return
        weight *= self.m.tasks_per_frame
        if m := self.p.kind_of(a).runtime_send_s:
            self.compute[a] = self.compute.get(a, 0.0) + weight * m
        if b != CLIENT and (m := self.p.kind_of(b).runtime_receive_s):
            self.compute[b] = self.compute.get(b, 0.0) + weight * m

    def _send(self, a: str, b: str, weight: float, nbytes: int) -> None:
        """``nbytes`` from ``a`` to ``b`` for the fraction ``weight`` of frames."""
        if a == b or weight == 0:
            return
        t = weight * self.m.transfer(a, b, nbytes)
        if a == CLIENT or b == CLIENT:
            self.client += t
        else:
            key = (a, b) if a < b else (b, a)
            self.links[key] = self.links.get(key, 0.0) + t

    def _mean_transfer(self, src, dst, nbytes: int) -> float:
        tr = self.m.transfer
        return sum(fa * fb * tr(a, b, nbytes) for a, fa in src for b, fb in dst)

    def stage(self, st: Stage, label: str = "") -> None:
        w = self.w
        last = w.layers[st.end - 1]
        shards = []
        for sh in st.shards:
            times = [self.m.time(d, st.start, st.end, sh.units) for d in sh.devices]
            fr = _fractions(times)
            shards.append((sh, times, fr))
        inputs, outputs = self.m.io(st.start, st.end)
        ready_out, mean_times = [], []
        for sh, times, fr in shards:
            dst = tuple(zip(sh.devices, fr))
            arrival: Ready = {}
            # per producer shard (its names travel as one message, one dependency per frame):
            # the widest window read of it, and its replicas
            producers: dict[tuple[int, int], tuple[int, tuple]] = {}
            for x, window in inputs:
                if x not in self.exports:
                    raise PlanError(f"stage [{st.start}, {st.end}) reads {x!r}, which no earlier stage exports")
                ex = self.exports[x]
                for k, (src, nbytes, ready) in enumerate(zip(ex.shards, ex.nbytes, ex.ready)):
                    producers[(ex.source, k)] = (max(window, producers.get((ex.source, k), (0,))[0]), src)
                    for b, fb in dst:
                        weight_b = min(1.0, window * fb) if window > 1 else fb
                        for a, fa in src:
                            self._send(a, b, fa * weight_b, nbytes)
                    arrival = _join(arrival, _shift(ready, self._mean_transfer(src, dst, nbytes)))
            for window, src in producers.values():
                for b, fb in dst:
                    for a, fa in src:
                        self._message(a, b, fa * (min(1.0, window * fb) if window > 1 else fb))
            deps = sum(window for (source, _), (window, _) in producers.items() if source >= 0)
            mean_t = sum(f * t for f, t in zip(fr, times))
            mean_times.append(mean_t)
            ready_out.append(_shift(arrival, mean_t))
            for d, t, f in zip(sh.devices, times, fr):
                kind = self.p.kind_of(d)
                runtime = (kind.runtime_task_s + deps * kind.runtime_dependency_s) * self.m.tasks_per_frame
                self.compute[d] = self.compute.get(d, 0.0) + f * (t + runtime)
                if not self.track:
                    continue
                if d not in self.memory:
                    self.memory[d] = self.p.kind_of(d).baseline_bytes
                self.memory[d] += self.m.memory(d, st.start, st.end, sh.units)
                piece = label + (f"[{sh.units[0]}:{sh.units[1]}]" if sh.units else "")
                self.tasks.setdefault(d, []).append(piece)
        self.stage_time.append(max(mean_times))
        for name in outputs:
            if st.split:
                if name != last.name:
                    raise PlanError(f"split stage [{st.start}, {st.end}) exports {name!r}; "
                                    "only its split layer may leave")
                sizes = tuple(message_bytes(w, name, sh.units) for sh, _, _ in shards)
            else:
                sizes = (message_bytes(w, name),)
            self.exports[name] = Export(tuple(tuple(zip(sh.devices, fr)) for sh, _, fr in shards),
                                        sizes, tuple(ready_out), st.start)

    def finish(self) -> Ready:
        """Send the output to the client; returns the frame's latency (max-plus form)."""
        ex = self.exports[self.w.output]
        done: Ready = {}
        for src, nbytes, ready in zip(ex.shards, ex.nbytes, ex.ready):
            for a, fa in src:
                self._send(a, CLIENT, fa, nbytes)
                self._message(a, CLIENT, fa)
            done = _join(done, _shift(ready, sum(fa * self.m.transfer(a, CLIENT, nbytes) for a, fa in src)))
        return done


# ---- the result -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cost:
    """What a plan is predicted to do. ``busy_s`` maps each resource to its busy seconds per
    frame; the largest names the bottleneck."""

    ips: float
    latency_s: float
    bottleneck: str
    memory_bytes: dict[str, int]
    memory_limit_bytes: dict[str, int]
    busy_s: dict[str, float] = field(default_factory=dict)
    stage_time_s: tuple[float, ...] = ()
    tasks: dict[str, list[str]] = field(default_factory=dict)
    compute_s: dict[str, float] = field(default_factory=dict)   # device -> its compute seconds per frame

    @property
    def period_s(self) -> float:
        return 1 / self.ips

    @property
    def over_memory(self) -> dict[str, tuple[int, int]]:
        """Devices whose memory need exceeds their kind's: ``{device: (need, have)}``."""
        return {d: (m, self.memory_limit_bytes[d]) for d, m in self.memory_bytes.items()
                if m > self.memory_limit_bytes[d]}

    @property
    def fits(self) -> bool:
        return not self.over_memory

    def to_dict(self) -> dict[str, Any]:
        return {"ips": self.ips, "latency_s": self.latency_s, "bottleneck": self.bottleneck,
                "fits": self.fits, "memory_bytes": dict(self.memory_bytes),
                "memory_limit_bytes": dict(self.memory_limit_bytes),
                "busy_s": dict(self.busy_s), "stage_time_s": list(self.stage_time_s)}

    def predicted(self) -> dict[str, Any]:
        """The compact dict the planner stores in ``Plan.predicted``."""
        return {"ips": round(self.ips, 6), "latency_s": round(self.latency_s, 6), "bottleneck": self.bottleneck,
                "memory_bytes": dict(self.memory_bytes)}


def value(r: Ready, origins: dict | None = None) -> float:
    """A max-plus ready time as a number (``origins`` gives the symbolic keys' values)."""
    origins = origins or {"origin": 0.0}
    return max(origins[k] + v for k, v in r.items())


def host_busy_s(profile: Profile, plan: Plan, compute: dict[str, float]) -> dict[str, float]:
    """Busy seconds per frame of each shared host (module docstring), by resource label."""
    if not profile.host_cores:
        return {}
    host_of = {d.name: d.host for d in profile.devices}
    tasks = sum(len(st.shards) for st in plan.stages)
    out = {}
    for host, cores in sorted(profile.host_cores.items()):
        devs = [d for d in plan.devices if host_of.get(d) == host]
        if not devs:
            continue
        dask_s = tasks * profile.host_task_overhead_s.get(host, 0.0) + profile.host_frame_overhead_s.get(host, 0.0)
        cpu = sum(compute.get(d, 0.0) for d in devs) + dask_s
        out[f"cpu of host {host} ({cores:g} cores shared by {len(devs)} devices"
            + (", scheduler and client)" if dask_s else ")")] = cpu / cores
    return out


def evaluate(workload, plan: Plan, profile: Profile, memo: Memo | None = None) -> Cost:
    """Predict ``plan`` on ``profile`` (every plan device must be in the profile); ``memo``
    may price pieces another way (``mcdask.planning.batching``: K frames per task)."""
    plan.validate(workload)
    missing = [d for d in plan.devices if d not in profile.device_names]
    if missing:
        raise ProfileError(f"plan devices {missing} are not in profile {profile.name!r} "
                           f"(devices: {', '.join(profile.device_names)})")
    walk = Walk(workload, profile, memo=memo)
    for st in plan.stages:
        walk.stage(st, stage_label(workload, st))
    latency = value(walk.finish())
    busy: dict[str, float] = {}
    for d in plan.devices:
        busy[f"compute {d} ({', '.join(walk.tasks.get(d, []))})"] = walk.compute.get(d, 0.0)
    for (a, b), t in sorted(walk.links.items()):
        busy[f"link {a}<->{b}"] = t
    busy[f"client link ({CLIENT}: frames out, results in)"] = walk.client
    busy.update(host_busy_s(profile, plan, walk.compute))
    name, period = max(busy.items(), key=lambda kv: kv[1])
    if period <= 0:
        raise ProfileError("every device and link is idle per frame (all profiled times are 0); check the profile")
    limits = {d: profile.kind_of(d).memory_bytes for d in plan.devices}
    return Cost(ips=1 / period, latency_s=latency, bottleneck=name,
                memory_bytes={d: walk.memory.get(d, 0) for d in plan.devices}, memory_limit_bytes=limits,
                busy_s=busy, stage_time_s=tuple(walk.stage_time), tasks=walk.tasks,
                compute_s={d: walk.compute.get(d, 0.0) for d in plan.devices})
