"""What a task costs beyond its layers: ``mcdask.streaming.stream.Stream`` sends frames through
1- and 2-stage plans of pieces that compute nothing; the CPU seconds per task of each worker, of
the client and of a scheduler process are the overhead."""

from __future__ import annotations

import os
import socket
import statistics
import time
from typing import Any

import numpy as np

import workloads
from mcdask.errors import ProfileError
from mcdask.profiling.worker import noop

#: probe chains per worker for the per-task overhead
OVERHEAD_FRAMES = 80


def cpu_seconds() -> tuple[str, int, float]:
    """(host, pid, CPU seconds of all threads) of this process: ``time.process_time``, to the
    nanosecond (the kernel's per-process user + system times tick at 10 ms, coarser than a
    task)."""
    return socket.gethostname(), os.getpid(), time.process_time()


def probe_piece(feeds: dict, exports: dict[str, tuple]) -> dict[str, np.ndarray]:
    """A piece that computes nothing: touches its feeds as ``run_piece`` does (merging the
    producers' shards) and returns zero exports of the real shapes."""
    for value in feeds.values():
        if not isinstance(value, np.ndarray):
            [np.concatenate([part[k] for part in shards for k in part], axis=-1) for shards in value]
    return {name: np.zeros((1,) + tuple(shape), np.float32) for name, shape in exports.items()}


class _ProbeRunner:
    """Submits ``probe_piece`` tasks for a ``Stream``: stage s of frame i on worker ``(i + s) % n``."""

    def __init__(self, client, plan, workload, addrs: list[str]):
        self.client, self.plan, self.addrs = client, plan, addrs
        self.exports = [{x: workload.shape_of(x) for x in workload.stage_outputs(st.start, st.end)}
                        for st in plan.stages]
        self.tasks = {a: 0 for a in addrs}

    def submit(self, stage: int, shard: int, frame: int, feeds: dict):
        a = self.addrs[(frame + stage) % len(self.addrs)]
        self.tasks[a] += 1
        return self.client.submit(probe_piece, feeds, self.exports[stage], workers=[a], pure=False,
                                  priority=-frame, key=(f"mcdask-probe-s{stage}", frame, time.monotonic_ns()))

    def gather(self, futures: list) -> list:
        return self.client.gather(futures)

    def cancel(self, futures: list) -> None:
        self.client.cancel(futures)

    def why_stalled(self) -> str | None:
        return None


def _probe_stream(client, addrs: list[str], stages: int, frames: int) -> dict[str, Any]:
    """Stream ``frames`` AlexNet-sized frames through a ``stages``-stage plan of no-op pieces;
    CPU seconds spent by each worker, the client process and the scheduler process."""
    from mcdask.model.plan import Plan, Shard, Stage
    from mcdask.streaming.records import Item
    from mcdask.streaming.stream import Stream

    w = workloads.get("alexnet")
    cuts = [0, 9, len(w.layers)] if stages == 2 else [0, len(w.layers)]
    plan = Plan(w.name, ("probe",), tuple(Stage(a, b, (Shard(None, ("probe",)),)) for a, b in zip(cuts, cuts[1:])),
                "probe")
    runner = _ProbeRunner(client, plan, w, addrs)
    rng = np.random.default_rng(0)
    items = [Item(i, {x: rng.integers(0, 256, shape, dtype=np.uint8) for x, shape in w.inputs.items()})
             for i in range(frames)]
    sched0 = client.run_on_scheduler(cpu_seconds)
    me0 = cpu_seconds()
    w0 = client.run(cpu_seconds, workers=addrs)
    t0 = time.perf_counter()
    for rec in Stream(runner, plan, w, 2 * len(addrs)).run(items):
        if rec.status != "ok":
            raise ProfileError(f"overhead probe: frame {rec.frame} failed: {rec.error}")
    wall = time.perf_counter() - t0
    w1 = client.run(cpu_seconds, workers=addrs)
    me1 = cpu_seconds()
    sched1 = client.run_on_scheduler(cpu_seconds)
    hosts = {me0[0]: me1[2] - me0[2]}
    if (sched0[0], sched0[1]) != (me0[0], me0[1]):      # a scheduler process of its own
        hosts[sched0[0]] = hosts.get(sched0[0], 0.0) + sched1[2] - sched0[2]
    return {"workers": {a: (w1[a][2] - w0[a][2], runner.tasks[a]) for a in addrs}, "hosts": hosts,
            "wall_s": wall, "scheduler_in_client_process": (sched0[0], sched0[1]) == (me0[0], me0[1])}


def measure_task_overhead(client, workers: dict[str, dict], frames: int = OVERHEAD_FRAMES) -> dict[str, Any]:
    """CPU cost of Dask's machinery per task and per frame, measured with the stream itself.

    ``mcdask.streaming.stream.Stream`` sends AlexNet-sized uint8 frames through a 1-stage and a 2-stage
    plan whose pieces compute nothing (``probe_piece``: they merge their feeds and return
    zero exports of the real shapes), stage s of frame i on worker ``(i + s) % n``. Per worker:
    its process's CPU seconds per task. Per host of the client (and of the scheduler, when it
    is a process of its own): from ``c1 = frame + task`` and ``c2 = frame + 2 task`` CPU
    seconds per frame of the two runs, ``task`` and ``frame`` (each at least 0). Also the
    isolated round trip of one no-op task per worker, for people.
    """
    names = list(workers)
    addrs = [workers[n]["address"] for n in names]
    rtt = {}
    for name, a in zip(names, addrs):
        client.submit(noop, workers=[a], pure=False).result()          # warm the path
        times = []
        for _ in range(5):
            time.sleep(0.02)  # isolated: the client's batching window is idle again
            t0 = time.perf_counter()
            client.submit(noop, workers=[a], pure=False).result()
            times.append(time.perf_counter() - t0)
        rtt[name] = statistics.median(times)
    _probe_stream(client, addrs, 1, 8)   # warm up
    one = _probe_stream(client, addrs, 1, frames)
    two = _probe_stream(client, addrs, 2, frames)
    per_worker = {}
    for n, a in zip(names, addrs):
        cpu = one["workers"][a][0] + two["workers"][a][0]
        tasks = one["workers"][a][1] + two["workers"][a][1]
        per_worker[n] = cpu / tasks if tasks else 0.0
    hosts, host_frame = {}, {}
    for h in sorted(set(one["hosts"]) | set(two["hosts"])):
        c1, c2 = one["hosts"].get(h, 0.0) / frames, two["hosts"].get(h, 0.0) / frames
        task = max(c2 - c1, 0.0)
        hosts[h], host_frame[h] = task, max(c1 - task, 0.0)
    return {"workers": per_worker, "hosts": hosts, "hosts_per_frame": host_frame, "noop_round_trip_s": rtt,
            "probe": {"frames": frames, "wall_s": [round(one["wall_s"], 3), round(two["wall_s"], 3)],
                      "client_host_cpu_s_per_frame": {h: [round(one["hosts"].get(h, 0.0) / frames, 6),
                                                          round(two["hosts"].get(h, 0.0) / frames, 6)]
                                                      for h in hosts},
                      "scheduler_in_client_process": one["scheduler_in_client_process"]}}


def _wait_released(client, keys: set, timeout_s: float) -> None:
    """Until the scheduler has forgotten ``keys`` (the client lets go of them in the background)."""
    def left(dask_scheduler, keys=tuple(keys)) -> int:
        return sum(k in dask_scheduler.tasks for k in keys)

    deadline = time.monotonic() + timeout_s
    while (n := client.run_on_scheduler(left)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if n:
        raise ProfileError(f"the message probe's {n} payloads and tasks were not released within {timeout_s:.0f} s")


def gather_feeds(*parts) -> int:
    """A task that reads its dependencies and computes nothing (the message probe's consumer)."""
    return sum(int(p.size) for p in parts)


def measure_message_cost(client, dst: str, srcs: list[str], tasks: int = 100, many: int = 16,
                         nbytes: int = 16_000, rounds: int = 3) -> dict[str, float]:
    """Worker CPU seconds of Dask's own work beyond a task's computation: per task, per
    dependency of a task, and per message between workers (the consumer's cost of fetching a
    dependency from another worker, the producer's cost of serving it).

    ``tasks`` consumer tasks on worker ``dst``, each reading payloads of ``nbytes``
    (incompressible) scattered beforehand, three ways: one payload on ``dst`` itself; ``many``
    payloads on ``dst``; one payload on one of the workers ``srcs`` (in turn). Then, on
    ``dst``: dependency = the extra CPU per extra payload at hand; task = the CPU of a task less
    its one dependency; receive = the extra CPU of fetching its payload. Send: the holders' CPU
    per payload served. Medians of ``rounds`` after one round that opens the connections.
    """
    from distributed import wait

    rng = np.random.default_rng(0)
    data = [rng.integers(0, 256, nbytes, dtype=np.uint8) for _ in range(many)]

    def one(holders: list[str], deps: int, tag: str) -> dict[str, float]:
        slots = [holders[k % len(holders)] for k in range(tasks * deps)]
        scattered = {h: iter(client.scatter([data[k % deps] for k in range(tasks * deps) if slots[k] == h],
                                            workers=[h], direct=True, hash=False)) for h in holders}
        held = [[next(scattered[slots[i * deps + j]]) for j in range(deps)] for i in range(tasks)]
        mine.update(f.key for fs in held for f in fs)
        before = client.run(cpu_seconds, workers=[dst, *srcs])
        readers = [client.submit(gather_feeds, *fs, workers=[dst], pure=False, key=f"mcdask-msg-{tag}-{i}")
                   for i, fs in enumerate(held)]
        mine.update(f.key for f in readers)
        wait(readers)
        after = client.run(cpu_seconds, workers=[dst, *srcs])
        del readers, held
        return {a: after[a][2] - before[a][2] for a in after}

    mine: set = set()
    got: dict[str, list[float]] = {"task_s": [], "dependency_s": [], "receive_s": [], "send_s": []}
    for r in range(rounds + 1):
        local, window, remote = one([dst], 1, f"l{r}"), one([dst], many, f"w{r}"), one(srcs, 1, f"r{r}")
        if r == 0:
            continue
        dependency = max(window[dst] - local[dst], 0.0) / (tasks * (many - 1))
        got["dependency_s"].append(dependency)
        got["task_s"].append(max(local[dst] / tasks - dependency, 0.0))
        got["receive_s"].append(max(remote[dst] - local[dst], 0.0) / tasks)
        got["send_s"].append(max(sum(remote[s] for s in srcs), 0.0) / tasks)
    _wait_released(client, mine, 30.0)
    return {k: statistics.median(v) for k, v in got.items()} | {"tasks": tasks, "many": many, "nbytes": nbytes}
