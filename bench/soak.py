"""``mcdask bench --soak FRAMES``: does a long stream keep its memory flat?

A stock local cluster (one ``dask scheduler`` and three ``dask worker`` processes on loopback,
no nanny) takes a synthetic AlexNet stream of FRAMES frames through the planner's plan, as
``mcdask run`` does it (no record kept, every answer written to ``--out`` as it comes). Every
``SAMPLE_S`` the memory of the client, the scheduler and each worker is sampled with the frames
read so far: resident (RSS) and anonymous (``RssAnon``: the heap, what a leak grows; RSS also
counts pages of shared libraries, which the kernel drops and reloads as other processes need
memory). Every ``STRUCTURES_S`` the length of the scheduler's per-task histories
(``scheduler_histories``). The result is each process's growth in anonymous memory between a
quarter of the way and the end (``GROWTH_LIMIT`` is the bar; RSS growth beside it), a JSON file
and a plot of memory over frames.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

FULL_FRAMES = 20_000      # the full run's length (its files are soak.json / soak.png)
WORKERS = 3
SAMPLE_S = 1.0            # RSS sampling period
STRUCTURES_S = 10.0       # scheduler histories sampling period
GROWTH_LIMIT = 0.05       # growth between 25 % and 100 % of the frames that counts as flat
START_TIMEOUT_S = 120.0   # for the scheduler to listen and the workers to register
# what Dask's nanny gives the workers it starts (distributed.nanny.pre-spawn-environ); the soak
# passes nothing: mcdask's history plugins set the same threshold in the stock scheduler and
# workers, and the mcdask command in the client (mcdask.runtime.malloc)
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": "65536"}


def scheduler_histories(dask_scheduler) -> dict[str, int]:
    """Lengths of what a scheduler keeps per task or per event (run on the scheduler)."""
    s = dask_scheduler
    out = {"tasks": len(s.tasks), "task_groups": len(s.task_groups), "task_prefixes": len(s.task_prefixes),
           "transition_log": len(s.transition_log), "computations": len(s.computations),
           "events": sum(len(t.events) for t in s._broker._topics.values()),
           "task_metadata": len(s.task_metadata), "erred_tasks": len(s.erred_tasks)}
    for name, plugin in s.plugins.items():
        buffer = getattr(plugin, "buffer", None)
        if buffer is not None:
            out[f"plugin {name}"] = len(buffer)
    spans = s.extensions.get("spans")
    if spans is not None:
        out["spans"] = len(spans.spans)
    return out


def _die_with_parent() -> None:
    """In the child: SIGTERM when the soak's process dies, however it dies (PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class LocalProcesses:
    """A scheduler and ``WORKERS`` workers as stock ``dask`` processes in a temp dir."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir, self.env = workdir, {**os.environ, **env}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def _spawn(self, name: str, *args: str) -> None:
        self.procs[name] = subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], cwd=self.workdir,
                                            env=self.env, stdout=subprocess.DEVNULL,
                                            stderr=open(self.workdir / f"{name}.log", "a"), start_new_session=True,
                                            preexec_fn=_die_with_parent)

    def start(self) -> None:
        self._spawn("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                    "--dashboard-address", ":0")
        deadline = time.monotonic() + START_TIMEOUT_S
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            if time.monotonic() > deadline or self.procs["scheduler"].poll() is not None:
                raise RuntimeError(f"the scheduler did not listen on {self.address} within {START_TIMEOUT_S:.0f} s "
                                   f"(see {self.workdir / 'scheduler.log'})")
            time.sleep(0.2)
        for i in range(1, WORKERS + 1):
            self._spawn(f"w{i}", "worker", self.address, "--name", f"w{i}", "--nthreads", "1", "--no-nanny",
                        "--no-dashboard")

    def wait_for_workers(self, client) -> None:
        try:
            client.wait_for_workers(WORKERS, timeout=START_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"{WORKERS} workers did not register within {START_TIMEOUT_S:.0f} s "
                               f"(see the logs in {self.workdir})") from None

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def close(self) -> None:
        """Workers first, then the scheduler; each gets 15 s to go before it is killed."""
        for name in sorted(self.procs, key=lambda n: n == "scheduler"):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


class Sampler:
    """A daemon thread: every ``SAMPLE_S``, the RSS of each process and the frames read."""

    def __init__(self, pids: dict[str, int], frames: Callable[[], int], histories: Callable[[], dict]):
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.frames, self.histories = frames, histories
        self.samples: list[dict] = []
        self.structures: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mcdask-soak-sampler", daemon=True)
        self.t0 = time.monotonic()

    def _loop(self) -> None:
        next_structures = 0.0
        while not self._stop.wait(SAMPLE_S):
            t = time.monotonic() - self.t0
            rss, anon = {}, {}
            for name, proc in self.procs.items():
                try:
                    rss[name] = proc.memory_info().rss
                except psutil.Error:
                    rss[name] = None
                anon[name] = anon_bytes(proc.pid)
            self.samples.append({"t_s": round(t, 2), "frames": self.frames(), "rss": rss, "anon": anon})
            if t >= next_structures:
                next_structures = t + STRUCTURES_S
                try:
                    self.structures.append({"t_s": round(t, 2), "frames": self.frames(), **self.histories()})
                except Exception as e:  # noqa: BLE001 - a missed sample is said, the soak goes on
                    self.structures.append({"t_s": round(t, 2), "error": f"{type(e).__name__}: {e}"})

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=SAMPLE_S + 15)


def anon_bytes(pid: int) -> int | None:
    """The anonymous resident memory of process ``pid`` (Linux ``RssAnon``), None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_near(samples: list[dict], measure: str, name: str, frame: int, n: int = 5) -> float | None:
    """The median ``measure`` (rss, anon) of process ``name`` over the ``n`` samples taken
    nearest to ``frame``."""
    near = sorted((abs(s["frames"] - frame), s[measure][name]) for s in samples if s[measure].get(name))[:n]
    values = sorted(v for _, v in near)
    return float(values[len(values) // 2]) if values else None


def growth(samples: list[dict], frames: int, measure: str = "anon") -> dict[str, dict]:
    """Each process's ``measure`` at a quarter of the frames and at the end, and the growth between."""
    out = {}
    for name in samples[0][measure] if samples else ():
        quarter = memory_near(samples, measure, name, frames // 4)
        end = memory_near(samples, measure, name, frames)
        out[name] = {"quarter_mb": None if quarter is None else round(quarter / 2**20, 1),
                     "end_mb": None if end is None else round(end / 2**20, 1),
                     "growth": None if not quarter or end is None else round((end - quarter) / quarter, 4)}
    return out


def check_out_file(path: Path, frames: int) -> str | None:
    """Why the ``--out`` file does not hold every frame once, in order; None when it does."""
    seen = 0
    with open(path) as f:
        for line in f:
            got = json.loads(line)["frame"]
            if got != seen:
                return f"line {seen + 1} is frame {got}, expected {seen}"
            seen += 1
    return None if seen == frames else f"{seen} lines for {frames} frames"


def soak(frames: int, log: Callable[[str], None] = print) -> dict:
    """Stream ``frames`` synthetic AlexNet frames through a fresh local cluster, sampling memory."""
    import dask.config
    from distributed import Client

    import workloads
    from mcdask.commands import plan_book, stream_through
    from mcdask.runtime.deploy import worker_names
    from mcdask.runtime.history import client_config
    from mcdask.runtime.malloc import trim_freed_memory
    from mcdask.runtime.weights import WeightsSource
    from mcdask.streaming.sources import Feeder, open_source

    w = workloads.get("alexnet")
    read = [0]

    def counted(items) -> Iterator:
        for item in items:
            read[0] += 1
            yield item

    with tempfile.TemporaryDirectory(prefix="mcdask-soak-") as tmp:
        work = Path(tmp)
        env = {"TF_CPP_MIN_LOG_LEVEL": "2", "DASK_MCDASK__WORKER__INTRA_OP_THREADS": "1"}
        trimmed = trim_freed_memory()   # as the mcdask command does (here too when called as a library)
        cluster = LocalProcesses(work, env)
        try:
            cluster.start()
            with dask.config.set({"mcdask.worker.intra-op-threads": 1, **client_config()}), \
                    Client(cluster.address, timeout="30s", set_as_default=False) as client:
                cluster.wait_for_workers(client)
                plans = plan_book(w, None)
                plan = plans.plan_for(tuple(worker_names(client)))
                log(f"soak: {frames} AlexNet frames through plan {plan.id} on {WORKERS} local workers")
                feed = counted(Feeder(w).items(open_source("synthetic", w), frames))
                pids = {"client": os.getpid(), **cluster.pids()}
                histories = lambda: client.run_on_scheduler(scheduler_histories)
                with Sampler(pids, lambda: read[0], histories) as sampler:
                    _, summary = stream_through(client, plan, feed, WeightsSource(), None, str(work / "out.jsonl"),
                                                False, frames, plans=plans, keep="nothing")
                final_histories = histories()
            out_problem = check_out_file(work / "out.jsonl", frames)
        finally:
            cluster.close()
    result = {"frames": frames, "workers": WORKERS, "plan_id": plan.id, "sample_s": SAMPLE_S,
              "environment": {k: os.environ.get(k) for k in MALLOC_ENV},
              "malloc_trim": "set in every process by mcdask (mcdask.runtime.malloc)" if trimmed
              else "left to the environment",
              "growth_limit": GROWTH_LIMIT, "growth": growth(sampler.samples, frames, "anon"),
              "growth_rss": growth(sampler.samples, frames, "rss"),
              "out_file": out_problem or "every frame once, in order",
              "summary": {k: v for k, v in summary.items() if k not in ("events", "binding")},
              "scheduler_histories_end": final_histories,
              "samples": sampler.samples, "scheduler_histories": sampler.structures}
    result["flat"] = all(g["growth"] is not None and g["growth"] < GROWTH_LIMIT for g in result["growth"].values())
    return result


def plot(result: dict, path: Path) -> None:
    """Anonymous and resident memory of each process over the frames read, a line at a quarter
    of the way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    samples = result["samples"]
    for ax, measure, key, title in ((axes[0], "anon", "growth", "anonymous (RssAnon)"),
                                    (axes[1], "rss", "growth_rss", "resident (RSS)")):
        for name, g in result[key].items():
            pts = [(s["frames"], s[measure][name] / 2**20) for s in samples if s[measure].get(name)]
            pct = "-" if g["growth"] is None else format(100 * g["growth"], "+.1f") + " %"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{name} ({pct})")
        ax.axvline(result["frames"] / 4, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("frames read")
        ax.set_ylabel("MiB")
        ax.set_title(f"{title} memory; growth from 25 % to the end", fontsize="medium")
        ax.legend(loc="lower right", fontsize="small")
        ax.set_ylim(bottom=0)
    fig.suptitle(f"AlexNet soak: {result['frames']} frames through {result['workers']} local workers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lines(result: dict) -> list[str]:
    """The result for people: one line per process."""
    out = [f"{result['frames']} frames at {result['summary']['ips']:.2f} IPS; --out file: {result['out_file']}",
           "anonymous memory (RssAnon) at 25 % -> at the end; RSS growth in brackets"]
    for name, g in result["growth"].items():
        pct = "-" if g["growth"] is None else f"{100 * g['growth']:+.2f} %"
        rss = result["growth_rss"][name]["growth"]
        out.append(f"  {name:>9}: {g['quarter_mb']} MiB -> {g['end_mb']} MiB ({pct}) "
                   f"[RSS {'-' if rss is None else f'{100 * rss:+.2f} %'}]")
    out.append(f"flat (every process under {100 * GROWTH_LIMIT:.0f} %): {result['flat']}")
    return out
