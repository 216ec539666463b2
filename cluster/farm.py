"""Bring an emulated farm up, report on it, cap or uncap it, and take it down.

``up`` starts a Dask scheduler on this host (on the farm bridge, ``10.77.0.1``) and one stock
``dask worker`` per device, each in its own network namespace and cgroup (see
``cluster.plumbing``). Order matters:

1. measure this host's whole-AlexNet time (``cluster.calibrate.host_time_s``) while idle;
2. build the bridge, namespaces, TAP links with the delay line ``cluster.linkd`` and ``tc``
   rate limits, and the cgroups (memory limit
   from the start, no CPU limit yet);
3. start the scheduler, then the workers; each imports TensorFlow in ``cluster.preload``
   before registering;
4. when every worker has registered, apply the CPU quotas: each device's TensorFlow threads
   (placed by ``cluster.preload``) run in its ``compute`` cgroup at the calibrated share; the
   whole device (compute plus every Python thread) gets that plus the kind's ``runtime_share``.
   With ``verify`` (default) the first device of each kind builds AlexNet (caps lifted) and
   times it under the quotas from its task thread, and while it is more than 10 % off the
   target the kind's compute share is scaled by the measured ratio and timed again (at most
   three rounds; the closest stays; see ``_verify``).

Everything made is written to a state file as soon as it exists, so ``down`` cleans up after
a crash or a kill of ``up``; ``down`` also finds leftovers by name (prefix ``mcd``), by
cgroup (``mcdask-farm``) and by the ``MCDASK_FARM_MEMBER`` variable of processes it started.
Without root or namespaces ``up`` starts plain local worker processes instead and says that
CPU and network are not capped.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import compute_threads
from . import plumbing as pl
from .devices import CALIBRATION_WORKLOAD, DELAY_LINE_OVERHEAD_MS, FarmSpec, cfs_quota, format_bytes, shaped_link
from .errors import FarmError

STATE_VERSION = 1
#: Dask settings for farm workers (override any with ``--env`` or a spec's ``env``).
#: CPU: an idle stock worker uses about 1.7 % of a host core (measured here), as much as a
#: whole pi3 share (about 1.8 %); with these it uses about 0.2 %: the sampling profiler is off;
#: event-loop ticks, the system monitor and the memory monitor run less often.
#: Memory: TensorFlow 2.21 alone is ~550 MB of RSS on x86-64, so a 1 GiB worker with AlexNet
#: slices sits above Dask's 80 % pause threshold and would stop running tasks; the cgroup
#: limit is the device's memory, so Dask's own target/spill/pause are off (as the Dask notes
#: section 6 suggest for resident model weights).
WORKER_CONFIG = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__TICK__LIMIT": "60s",  # a capped device's event loop is slow by design
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "5s",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "1s",
    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False",
}
#: a device kind whose in-device AlexNet time is off its target by more than this is corrected
VERIFY_TOLERANCE = 0.10
VERIFY_BATCHES = 5
VERIFY_ROUNDS = 3
Log = Callable[[str], None]


def state_dir() -> Path:
    """``$MCDASK_FARM_DIR``, else ``/run/mcdask-farm`` as root, else a per-user temp dir."""
    if os.environ.get("MCDASK_FARM_DIR"):
        return Path(os.environ["MCDASK_FARM_DIR"])
    if os.geteuid() == 0:
        return Path("/run/mcdask-farm")
    return Path(tempfile.gettempdir()) / f"mcdask-farm-{os.geteuid()}"


class State:
    """The farm's state file: what exists, written after every change (atomic rename)."""

    def __init__(self, directory: Path, data: dict):
        self.dir = directory
        self.data = data

    @property
    def path(self) -> Path:
        return self.dir / "state.json"

    @classmethod
    def load(cls, directory: Path | None = None) -> State | None:
        d = directory or state_dir()
        try:
            return cls(d, json.loads((d / "state.json").read_text()))
        except (OSError, ValueError):
            return None

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)

    def made(self, what: str, item) -> None:
        self.data["resources"].setdefault(what, []).append(item)
        self.save()


# --------------------------------------------------------------------------------------- up

def up(spec: FarmSpec, *, time_scale: float = 1.0, port: int = 8786, dashboard_port: int = 8787,
       verify: bool = True, extra_env: dict[str, str] | None = None, host_time_s: float | None = None,
       start_timeout_s: float = 600, allow_fallback: bool = True, log: Log = print) -> dict:
    """Start the farm described by ``spec``; returns ``status()``."""
    if time_scale <= 0:
        raise FarmError(f"--time-scale must be > 0, got {time_scale}")
    existing = leftovers()
    if any(existing.values()):
        raise FarmError(f"a farm (or what is left of one) exists: {_describe(existing)}; "
                        "run `mcdask farm down` first")
    reason = pl.probe()
    if reason and not allow_fallback:
        raise FarmError(f"cannot emulate the farm here: {reason}")
    mode = "local" if reason else "netns"
    devices = spec.devices()

    calibration: dict = {"workload": CALIBRATION_WORKLOAD}
    if mode == "netns":
        if host_time_s is None:
            log(f"calibrating: whole-{CALIBRATION_WORKLOAD} time on this host (one thread)...")
            calibration.update(host_time_s_measure())
        else:
            calibration.update({"host_time_s": float(host_time_s), "command": "given (--host-time-s)"})
        log(f"  host {CALIBRATION_WORKLOAD}: {calibration['host_time_s'] * 1e3:.1f} ms per inference")
    dev_records = []
    for d in devices:
        link = shaped_link(d.kind, time_scale)
        rec = {"name": d.name, "kind": d.kind.name, "index": d.index,
               "memory_limit_bytes": d.kind.memory_bytes,
               "link_mbit": link.rate_mbit, "rtt_ms": link.rtt_ms, "host_rtt_ms": link.host_rtt_ms,
               "one_way_delay_ms": link.delay_ms, "delay_line_overhead_ms": DELAY_LINE_OVERHEAD_MS}
        if mode == "netns":
            rec.update({"ip": pl.device_ip(d.index), "netns": pl.netns_name(d.name),
                        "taps": list(pl.tap_names(d.index)),
                        **_cpu_fields(d.kind.cpu_share_on(calibration["host_time_s"], time_scale),
                                      d.kind.runtime_share_on(time_scale)),
                        "target_alexnet_s": d.kind.target_alexnet_s(calibration["host_time_s"], time_scale)})
        else:
            rec.update({"ip": "127.0.0.1", "cpu_share": None,
                        "target_alexnet_s": d.kind.target_alexnet_s(None, time_scale)})
        dev_records.append(rec)
    if mode == "netns":
        total = sum(r["cpu_share"] for r in dev_records)
        cores = os.cpu_count() or 1
        if total > 0.8 * cores:
            log(f"warning: the devices' compute shares add up to {total:.2f} of {cores} cores; when all "
                "are busy at once they will run slower than their kind")

    sdir = state_dir()
    host = pl.HOST_IP if mode == "netns" else "127.0.0.1"
    state = State(sdir, {
        "version": STATE_VERSION, "mode": mode, "phase": "starting",
        "created_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "not_capped_reason": reason, "spec": spec.to_dict(), "time_scale": time_scale,
        "calibration": calibration, "scheduler": f"tcp://{host}:{port}",
        "dashboard": f"http://{host}:{dashboard_port}/status", "cpu_capped": False,
        "cpu_cap_applied": None, "devices": dev_records,
        "resources": {"bridge": [], "netns": [], "links": [], "qdiscs": [], "cgroups": [], "pids": []},
    })
    (sdir / "logs").mkdir(parents=True, exist_ok=True)
    state.save()

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def _interrupted(signum, _frame):
        raise SystemExit(f"farm up interrupted by signal {signum}")

    for s in previous:
        signal.signal(s, _interrupted)
    try:
        if mode == "local":
            log(f"WARNING: {reason}.")
            log("WARNING: starting plain local worker processes instead: CPU and network are NOT "
                "capped (no namespaces, no tc shaping, no cgroup quota); each worker still gets its "
                "memory_limit and resources.")
        else:
            _build_network(state, log)
        env = _base_env(spec, extra_env)
        _start_scheduler(state, host, port, dashboard_port, env)
        _start_workers(state, env)
        log(f"waiting for {len(devices)} workers to import TensorFlow and register...")
        _wait_registered(state, timeout_s=start_timeout_s, log=log)
        if mode == "netns":
            if verify:
                log("verifying each kind's AlexNet time under its CPU quotas, on its first device...")
                _verify(state, start_timeout_s, log)
            else:
                set_caps(True, state=state)
        state.data["phase"] = "up"
        state.save()
    except BaseException as e:
        log(f"farm up failed ({type(e).__name__}: {e}); removing what it made")
        if (state.dir / "logs").exists():
            import shutil

            kept = Path(tempfile.mkdtemp(prefix="mcdask-farm-failed-"))
            shutil.copytree(state.dir / "logs", kept, dirs_exist_ok=True)
            log(f"  its logs are kept in {kept}")
        try:
            down(log=lambda _m: None)
        except Exception as e2:  # noqa: BLE001 - report both
            log(f"cleanup after the failure also failed: {e2}; run `mcdask farm down`")
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return status()


def _cpu_fields(compute_share: float, runtime_share: float) -> dict:
    """A device's CPU caps: its compute threads get ``compute_share`` of a host core; the
    whole device (compute + Dask's runtime threads) gets ``compute_share + runtime_share``."""
    quota, period = cfs_quota(compute_share)
    device = compute_share + runtime_share
    dquota, dperiod = cfs_quota(device, max_cores=float(os.cpu_count() or 1))
    return {"cpu_share": compute_share, "cpu_quota_us": quota, "cpu_period_us": period,
            "runtime_share": runtime_share, "device_share": device, "device_quota_us": dquota,
            "device_period_us": dperiod}


def _caps(rec: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(whole device, compute)`` quotas of a device record."""
    return (rec["device_quota_us"], rec["device_period_us"]), (rec["cpu_quota_us"], rec["cpu_period_us"])


def host_time_s_measure() -> dict:
    from .calibrate import host_time_s

    return host_time_s(CALIBRATION_WORKLOAD)


def _build_network(state: State, log: Log) -> None:
    pl.add_bridge()
    state.made("bridge", pl.BRIDGE)
    cg = pl.Cgroups.detect()
    state.data["cgroups"] = cg.to_dict()
    for base in cg.bases:
        state.made("cgroups", base)
    devices = state.data["devices"]
    for rec in devices:
        state.made("netns", rec["netns"])
        pl.add_netns(rec["name"])
    _start_linkd(state, devices)
    for rec in devices:
        host_if, ns_if = pl.tap_names(rec["index"])
        state.made("links", host_if)
        pl.attach_device(rec["index"], rec["name"])
        pl.shape(host_if, rec["link_mbit"])
        state.made("qdiscs", [host_if, None])
        pl.shape(ns_if, rec["link_mbit"], netns=rec["netns"])
        state.made("qdiscs", [ns_if, rec["netns"]])
        rec["cgroup_dirs"] = cg.create(rec["name"], rec["memory_limit_bytes"])
        state.save()
    kinds = {}
    for rec in devices:
        kinds.setdefault(rec["kind"], rec)
    log(f"network: bridge {pl.BRIDGE} {pl.HOST_IP}/24, {len(devices)} namespaces; "
        + "; ".join(f"{k}: {r['link_mbit']:g} Mbit/s, RTT {r['rtt_ms']:g} ms device<->device"
                    for k, r in kinds.items()))


def _start_linkd(state: State, devices: list[dict]) -> None:
    """The delay line owns every TAP; wait until it says they exist."""
    args = [f"{r['index']}:{r['one_way_delay_ms']:.4f}" for r in devices]
    p = _spawn(state, "linkd", "linkd", [sys.executable, "-m", "cluster.linkd", *args], _base_env(None, None),
               stdout=subprocess.PIPE)
    deadline = time.monotonic() + 30
    line = b""
    os.set_blocking(p.stdout.fileno(), False)
    while b"ready" not in line:
        chunk = p.stdout.read() or b""
        line += chunk
        if p.poll() is not None:
            raise FarmError(f"the delay line cluster.linkd exited ({p.returncode}): {_tail(state, 'linkd')}")
        if time.monotonic() > deadline:
            raise FarmError(f"the delay line did not create its TAPs within 30 s: {_tail(state, 'linkd')}")
        time.sleep(0.05)
    p.stdout.close()


def _base_env(spec: FarmSpec | None, extra_env: dict[str, str] | None) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
    })
    env.update(WORKER_CONFIG)
    env.update(spec.env if spec else {})
    env.update(extra_env or {})
    return env


def _spawn(state: State, role: str, name: str, cmd: list[str], env: dict[str, str],
           preexec: Callable[[], None] | None = None, stdout=None, stdin=None) -> subprocess.Popen:
    logf = open(state.dir / "logs" / f"{name}.log", "ab")
    try:
        p = subprocess.Popen(cmd, stdin=stdin or subprocess.DEVNULL, stdout=stdout or logf,
                             stderr=logf if stdout else subprocess.STDOUT,
                             env={**env, pl.MEMBER_ENV: f"{role}:{name}"}, start_new_session=True,
                             preexec_fn=preexec, close_fds=True)
    finally:
        logf.close()
    state.made("pids", {"pid": p.pid, "role": role, "name": name, "start": _start_time(p.pid)})
    return p


def _start_scheduler(state: State, host: str, port: int, dashboard_port: int, env: dict[str, str]) -> None:
    if _port_busy(host, port):
        raise FarmError(f"port {host}:{port} is already in use; pass --port to choose another")
    cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", str(port),
           "--dashboard-address", f"{host}:{dashboard_port}"]
    p = _spawn(state, "scheduler", "scheduler", cmd, env)
    deadline = time.monotonic() + 60
    while not _port_busy(host, port):
        if p.poll() is not None:
            raise FarmError(f"the scheduler exited ({p.returncode}): {_tail(state, 'scheduler')}")
        if time.monotonic() > deadline:
            raise FarmError(f"the scheduler did not listen on {host}:{port} within 60 s: {_tail(state, 'scheduler')}")
        time.sleep(0.2)


def _start_workers(state: State, env: dict[str, str]) -> None:
    netns = state.data["mode"] == "netns"
    cg = pl.Cgroups.from_dict(state.data["cgroups"]) if netns else None
    for rec in state.data["devices"]:
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", state.data["scheduler"],
               "--host", rec["ip"], "--name", rec["name"], "--nthreads", "1", "--no-nanny",
               "--memory-limit", str(rec["memory_limit_bytes"]), "--resources", f"{rec['kind']}=1",
               "--no-dashboard", "--preload", "cluster.preload", "--death-timeout", "60"]
        rec["command"] = " ".join(["dask worker", *cmd[3:]])
        preexec = _enter_device(str(pl.NETNS_DIR / rec["netns"]), cg.procs_files(rec["name"])) if netns else None
        dev_env = {**env, "MCDASK_DEVICE_NAME": rec["name"], "MCDASK_DEVICE_KIND": rec["kind"]}
        if netns:
            dev_env[compute_threads.ENV] = cg.compute_threads_file(rec["name"])
        p = _spawn(state, "worker", rec["name"], cmd, dev_env, preexec)
        rec["pid"] = p.pid
    state.save()


def _enter_device(netns_path: str, procs_files: list[str]) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        pid = str(os.getpid())
        for f in procs_files:
            with open(f, "w") as fh:
                fh.write(pid)
        pl.enter_netns(netns_path)
    return preexec


def _wait_registered(state: State, *, timeout_s: float, log: Log) -> None:
    from distributed import Client

    devices = state.data["devices"]
    names = {r["name"] for r in devices}
    t0 = time.monotonic()
    with Client(state.data["scheduler"], timeout="60s", set_as_default=False) as client:
        while True:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            by_name = {w["name"]: addr for addr, w in workers.items()}
            if names <= set(by_name):
                break
            for r in devices:
                if r["name"] not in by_name and not pl.alive(r["pid"]):
                    raise FarmError(f"worker {r['name']} exited while starting: {_tail(state, r['name'])}")
            if time.monotonic() - t0 > timeout_s:
                missing = sorted(names - set(by_name))
                raise FarmError(f"workers {missing} did not register within {timeout_s:.0f} s; see "
                                f"{state.dir / 'logs'}")
            time.sleep(0.5)
    for r in devices:
        r["address"] = by_name[r["name"]]
    state.data["workers_ready_after_s"] = round(time.monotonic() - t0, 1)
    state.save()
    log(f"  {len(devices)} workers registered after {state.data['workers_ready_after_s']} s")


def _verify(state: State, timeout_s: float, log: Log) -> None:
    """Closed loop per kind, on the kind's first device, as slices run there: AlexNet is built
    with the caps lifted and called from the worker's task thread. Its time under the quotas
    is the median of ``VERIFY_BATCHES`` batch means (a batch now and then runs 20-35 % off on
    this shared host); while that is more than ``VERIFY_TOLERANCE`` off the target the kind's
    compute share is scaled by the measured ratio, up to ``VERIFY_ROUNDS`` times; the
    closest round's share stays. The device then frees the model."""
    import statistics

    from distributed import Client

    from . import calibrate

    devices = state.data["devices"]
    first: dict[str, dict] = {}
    for d in devices:
        first.setdefault(d["kind"], d)
    with Client(state.data["scheduler"], timeout="60s", set_as_default=False) as client:
        for kind, r in first.items():
            on = {"workers": [r["address"]], "pure": False, "allow_other_workers": False}
            set_caps(False, state=state)
            try:
                client.submit(calibrate.prepare, CALIBRATION_WORKLOAD, **on).result(timeout=timeout_s)
            finally:
                set_caps(True, state=state)
            target = r["target_alexnet_s"]
            repeats = max(5, min(15, int(3 / target)))
            rounds = []
            while True:
                means = []
                for _ in range(VERIFY_BATCHES):
                    times = client.submit(calibrate.measure, CALIBRATION_WORKLOAD, repeats, 1,
                                          **on).result(timeout=timeout_s)
                    means.append(calibrate.summary(times)["mean_s"])
                t = statistics.median(means)
                rounds.append({"share": r["cpu_share"], "measured_s": t, "batch_means_s": means})
                if abs(t / target - 1) <= VERIFY_TOLERANCE or len(rounds) == VERIFY_ROUNDS:
                    break
                factor = min(2.0, max(0.5, t / target))
                for d in devices:
                    if d["kind"] == kind:
                        d.update(_cpu_fields(min(1.0, d["cpu_share"] * factor), d["runtime_share"]))
                set_caps(True, state=state)
            client.submit(calibrate.release, **on).result(timeout=timeout_s)
            best = min(rounds, key=lambda x: abs(x["measured_s"] / target - 1))
            for d in devices:
                if d["kind"] == kind:
                    d.update(_cpu_fields(best["share"], d["runtime_share"]))
                    d["verified_alexnet_s"] = best["measured_s"]
            set_caps(True, state=state)
            state.data.setdefault("verification", {})[kind] = {
                "device": r["name"], "target_s": target, "measured_s": best["measured_s"], "share": best["share"],
                "repeats": repeats, "rounds": rounds,
                "statistic": f"median of {VERIFY_BATCHES} means of {repeats} back-to-back inferences"}
            log(f"  {kind} ({r['name']}): AlexNet {best['measured_s']:.3f} s under its quotas (target "
                f"{target:.3f} s; {len(rounds)} round(s), compute share {best['share']:.4f} of a core)")
    state.save()


# --------------------------------------------------------------------------------------- caps

def set_caps(on: bool, state: State | None = None) -> dict:
    """Apply (``on``) or lift every device's CPU quota; the memory limit stays."""
    state = state or State.load()
    if state is None:
        raise FarmError("no farm is up (no state file); run `mcdask farm up` first")
    if state.data["mode"] != "netns":
        raise FarmError(f"this farm runs without cgroups ({state.data.get('not_capped_reason')}); "
                        "there is no CPU quota to change")
    cg = pl.Cgroups.from_dict(state.data["cgroups"])
    for r in state.data["devices"]:
        cg.set_cpu(r["name"], *(_caps(r) if on else (None, None)))
    state.data["cpu_capped"] = on
    if on:
        state.data["cpu_cap_applied"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    state.save()
    return status(state)


# --------------------------------------------------------------------------------------- status

def status(state: State | None = None, query_scheduler: bool = False) -> dict:
    """Plain data about the farm: mode, scheduler, calibration and one record per device."""
    state = state or State.load()
    if state is None:
        left = leftovers()
        return {"up": False, "devices": [], "leftovers": left if any(left.values()) else {}}
    d = state.data
    cg = pl.Cgroups.from_dict(d["cgroups"]) if d.get("cgroups") else None
    devices = []
    for r in d["devices"]:
        rec = {k: v for k, v in r.items() if k not in ("command",)}
        rec["alive"] = bool(r.get("pid")) and pl.alive(r["pid"])
        if cg:
            q = cg.read_cpu(r["name"], compute=True)
            rec["cpu_quota_now"] = None if q is None else {"quota_us": q[0], "period_us": q[1]}
            q = cg.read_cpu(r["name"])
            rec["device_quota_now"] = None if q is None else {"quota_us": q[0], "period_us": q[1]}
        rec["memory_limit"] = format_bytes(r["memory_limit_bytes"])
        devices.append(rec)
    out = {"up": d.get("phase") == "up", "phase": d.get("phase"), "mode": d["mode"],
           "cpu_capped": d["mode"] == "netns" and d.get("cpu_capped", False),
           "network_shaped": d["mode"] == "netns",
           "not_capped_reason": d.get("not_capped_reason"),
           "scheduler": d["scheduler"], "dashboard": d.get("dashboard"), "time_scale": d["time_scale"],
           "calibration": d.get("calibration"), "verification": d.get("verification"),
           "cpu_cap_applied": d.get("cpu_cap_applied"),
           "cpu_cap_note": "quotas are applied after the workers imported TensorFlow and registered",
           "created_at": d.get("created_at"), "state_file": str(state.path), "devices": devices}
    if query_scheduler:
        out["registered"] = _registered(d["scheduler"])
    return out


def _registered(address: str) -> list[str] | None:
    try:
        from distributed import Client

        with Client(address, timeout="5s", set_as_default=False) as c:
            return sorted(w["name"] for w in c.scheduler_info(n_workers=-1)["workers"].values())
    except Exception:  # noqa: BLE001 - status must not fail because the scheduler is gone
        return None


# --------------------------------------------------------------------------------------- down

def leftovers() -> dict[str, list]:
    """Everything of a farm that exists now, found by state file and by name."""
    state = State.load()
    root = os.geteuid() == 0
    out = {
        "state": [str(state.path)] if state else [],
        "processes": sorted(set(pl.marked_pids())),
        "netns": pl.our_netns() if root else [],
        "links": pl.our_links() if root else [],
        "qdiscs": pl.our_qdiscs() if root else [],
        "cgroups": pl.find_farm_cgroups() if root else [],
    }
    return out


def down(log: Log = print) -> dict:
    """Remove every process, qdisc, link, namespace and cgroup of the farm; harmless to repeat."""
    state = State.load()
    res = state.data.get("resources", {}) if state else {}
    root = os.geteuid() == 0
    removed: dict[str, list] = {}

    pids = set(pl.marked_pids())
    for p in res.get("pids", []):
        if pl.alive(p["pid"]) and _start_time(p["pid"]) == p.get("start"):
            pids.add(p["pid"])
    cgroup_bases = sorted(set(res.get("cgroups", [])) | (set(pl.find_farm_cgroups()) if root else set()))
    netns = sorted(set(res.get("netns", [])) | set(pl.our_netns() if root else []))
    for base in cgroup_bases:
        pids.update(pl.cgroup_pids([str(p) for p in Path(base).glob("*") if p.is_dir()] + [base]))
    for ns in netns:
        pids.update(pl.netns_pids(ns))
    removed["processes"] = pl.kill_pids(sorted(pids))

    links = sorted(set(res.get("links", [])) | set(pl.our_links() if root else []),
                   key=lambda n: n == pl.BRIDGE)  # the bridge last
    # a device's qdiscs go with its TAPs (host side) and its namespace (device side)
    removed["qdiscs"] = sorted({q[0] for q in res.get("qdiscs", [])} | set(pl.our_qdiscs() if root else []))
    for name in links:
        pl.delete_link(name)
    removed["links"] = links
    for ns in netns:
        pl.delete_netns(ns)
    removed["netns"] = netns
    failed = [b for b in cgroup_bases if not pl.remove_cgroup_tree(b)]
    removed["cgroups"] = cgroup_bases

    sdir = state.dir if state else state_dir()
    if sdir.exists():
        for f in sorted(sdir.rglob("*"), key=lambda p: -len(p.parts)):
            (f.rmdir if f.is_dir() else f.unlink)()
        sdir.rmdir()
        removed["state"] = [str(sdir)]

    left = leftovers()
    if failed or any(left.values()):
        raise FarmError(f"farm down could not remove: {_describe(left)}"
                        + (f"; cgroups still busy: {failed}" if failed else ""))
    what = {k: v for k, v in removed.items() if v}
    log("farm down: removed " + (_describe(what) if what else "nothing (no farm was up)"))
    return what


# --------------------------------------------------------------------------------------- helpers

def _describe(d: dict[str, list]) -> str:
    return "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in d.items() if v)


def _port_busy(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (guards against pid reuse)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _tail(state: State, name: str, n: int = 15) -> str:
    try:
        lines = (state.dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------------------- checks

def measure_link(src: str | None, dst: str, nbytes: int = 8_000_000, pings: int = 20, port: int = 5201) -> dict:
    """TCP bandwidth and RTT from device ``src`` (``None``: this host) to device ``dst``, with
    ``cluster.netcheck`` running in their namespaces."""
    state = State.load()
    if state is None or state.data["mode"] != "netns":
        raise FarmError("measure_link needs a running farm with namespaces (`mcdask farm up` as root)")
    recs = {r["name"]: r for r in state.data["devices"]}
    for name in filter(None, (src, dst)):
        if name not in recs:
            raise FarmError(f"no device {name!r} in this farm; devices: {', '.join(recs)}")
    env = _base_env(None, None)
    py = [sys.executable, "-m", "cluster.netcheck"]
    server = subprocess.Popen(["ip", "netns", "exec", recs[dst]["netns"], *py, "serve", "--host", recs[dst]["ip"],
                               "--port", str(port), "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**env, pl.MEMBER_ENV: "netcheck:serve"})
    try:
        if b"listening" not in server.stdout.readline():
            raise FarmError(f"netcheck server did not start: {server.stderr.read().decode()[-500:]}")
        cmd = [*py, "measure", recs[dst]["ip"], "--port", str(port), "--bytes", str(nbytes),
               "--pings", str(pings), "--json"]
        if src:
            cmd = ["ip", "netns", "exec", recs[src]["netns"], *cmd]
        out = pl.run_json(cmd, timeout_s=300, env={**env, pl.MEMBER_ENV: "netcheck:measure"})
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    out.update({"src": src or "host", "dst": dst, "shaped_mbit": recs[dst]["link_mbit"],
                "shaped_rtt_ms": recs[dst]["host_rtt_ms"] if src is None else
                (recs[src]["rtt_ms"] + recs[dst]["rtt_ms"]) / 2})
    return out
