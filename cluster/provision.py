"""One device of the farm, from record to registered worker and back: the steps ``farm up``
and ``farm add`` share, and the teardown ``farm remove`` uses.

A device is a record in the state file (``device_record``), a network namespace with a TAP
link run by a delay line and shaped by HTB, cgroups with its memory limit and CPU quotas
(``build_devices``), and one stock ``dask worker`` process (``start_workers``) that imports
TensorFlow in ``cluster.preload`` before it registers (``wait_registered``); its CPU quotas are
applied after that (``apply_caps``). Every object is recorded in the state as soon as it
exists, so ``farm down`` finds it after any failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import cgroups, compute_threads, network, processes, system, tls
from .cgroups import Cgroups
from .devices import DELAY_LINE_OVERHEAD_MS, DeviceKind, FarmSpec, cfs_quota, shaped_link
from .errors import FarmError
from .recipe import WORKER_CONFIG, worker_flags
from .state import State

#: how long the delay line may take to create its TAPs
LINKD_READY_S = 30
Log = Callable[[str], None]


# --------------------------------------------------------------------------------------- records

def device_record(name: str, kind: DeviceKind, index: int, mode: str, host_time_s: float | None,
                  time_scale: float) -> dict:
    """The state record of a device before anything of it exists: its caps, link and address.
    In ``netns`` mode the compute share is the kind's open-loop share on this host."""
    link = shaped_link(kind, time_scale)
    rec = {"name": name, "kind": kind.name, "index": index, "memory_limit_bytes": kind.memory_bytes,
           "link_mbit": link.rate_mbit, "rtt_ms": link.rtt_ms, "host_rtt_ms": link.host_rtt_ms,
           "one_way_delay_ms": link.delay_ms, "delay_line_overhead_ms": DELAY_LINE_OVERHEAD_MS}
    if mode == "netns":
        rec.update({"ip": network.device_ip(index), "netns": network.netns_name(name),
                    "taps": list(network.tap_names(index)),
                    **cpu_fields(kind.cpu_share_on(host_time_s, time_scale), kind.runtime_share_on(time_scale)),
                    "target_alexnet_s": kind.target_alexnet_s(host_time_s, time_scale)})
    else:
        rec.update({"ip": "127.0.0.1", "cpu_share": None, "target_alexnet_s": kind.target_alexnet_s(None, time_scale)})
    return rec


def cpu_fields(compute_share: float, runtime_share: float) -> dict:
    """A device's CPU caps: its compute threads get ``compute_share`` of a host core; the
    whole device (compute + Dask's runtime threads) gets ``compute_share + runtime_share``."""
    quota, period = cfs_quota(compute_share)
    device = compute_share + runtime_share
    dquota, dperiod = cfs_quota(device, max_cores=float(os.cpu_count() or 1))
    return {"cpu_share": compute_share, "cpu_quota_us": quota, "cpu_period_us": period,
            "runtime_share": runtime_share, "device_share": device, "device_quota_us": dquota,
            "device_period_us": dperiod}


def warn_if_oversubscribed(devices: list[dict], log: Log) -> None:
    """Say so when the compute shares of ``devices`` add up to more than 80 % of the host."""
    total = sum(r["cpu_share"] or 0 for r in devices)
    cores = os.cpu_count() or 1
    if total > 0.8 * cores:
        log(f"warning: the devices' compute shares add up to {total:.2f} of {cores} cores; when all "
            "are busy at once they will run slower than their kind")


def apply_caps(cg: Cgroups, rec: dict, on: bool) -> None:
    """Apply (``on``) or lift the device's two CPU quotas; its memory limit stays."""
    caps = ((rec["device_quota_us"], rec["device_period_us"]), (rec["cpu_quota_us"], rec["cpu_period_us"]))
    cg.set_cpu(rec["name"], *(caps if on else (None, None)))


# --------------------------------------------------------------------------------------- network

def build_devices(state: State, devices: list[dict], cg: Cgroups, linkd_name: str) -> None:
    """Namespaces, TAP links (one delay line ``linkd_name`` for all of ``devices``), HTB
    shaping and cgroups of ``devices``; the farm's bridge must exist."""
    for rec in devices:
        state.made("netns", rec["netns"])
        network.add_netns(rec["name"])
    start_linkd(state, devices, linkd_name)
    for rec in devices:
        host_if, ns_if = network.tap_names(rec["index"])
        state.made("links", host_if)
        network.attach_device(rec["index"], rec["name"])
        network.shape(host_if, rec["link_mbit"])
        state.made("qdiscs", [host_if, None])
        network.shape(ns_if, rec["link_mbit"], netns=rec["netns"])
        state.made("qdiscs", [ns_if, rec["netns"]])
        rec["cgroup_dirs"] = cg.create(rec["name"], rec["memory_limit_bytes"])
        state.save()


def start_linkd(state: State, devices: list[dict], name: str) -> None:
    """A delay line owning the TAPs of ``devices``; wait until it says they exist."""
    args = [f"{r['index']}:{r['one_way_delay_ms']:.4f}" for r in devices]
    p = spawn(state, "linkd", name, [sys.executable, "-m", "cluster.linkd", *args], base_env(None, None),
              stdout=subprocess.PIPE)
    deadline = time.monotonic() + LINKD_READY_S
    line = b""
    out = p.stdout
    assert out is not None, "spawned with stdout=PIPE"
    os.set_blocking(out.fileno(), False)
    while b"ready" not in line:
        line += out.read() or b""
        if p.poll() is not None:
            raise FarmError(f"the delay line cluster.linkd exited ({p.returncode}): {tail(state, name)}")
        if time.monotonic() > deadline:
            raise FarmError(f"the delay line {name} did not create its TAPs within {LINKD_READY_S} s: "
                            f"{tail(state, name)}")
        time.sleep(0.05)
    out.close()


# --------------------------------------------------------------------------------------- processes

def base_env(spec: FarmSpec | None, extra_env: dict[str, str] | None) -> dict[str, str]:
    """Environment of every farm process: this checkout on the path, one thread per math
    library, no GPU, the farm's Dask settings, then the spec's and the caller's extras."""
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


def spawn(state: State, role: str, name: str, cmd: list[str], env: dict[str, str],
          preexec: Callable[[], None] | None = None, stdout=None, stdin=None) -> subprocess.Popen:
    """Start a farm process in its own session, logging to ``logs/<name>.log``, marked with
    ``MCDASK_FARM_MEMBER`` and recorded (pid and start time) before anything else happens."""
    logf = open(state.dir / "logs" / f"{name}.log", "ab")
    try:
        p = subprocess.Popen(cmd, stdin=stdin or subprocess.DEVNULL, stdout=stdout or logf,
                             stderr=logf if stdout else subprocess.STDOUT,
                             env={**env, processes.MEMBER_ENV: f"{role}:{name}"}, start_new_session=True,
                             preexec_fn=preexec, close_fds=True)
    finally:
        logf.close()
    state.made("pids", {"pid": p.pid, "role": role, "name": name, "start": processes.start_time(p.pid)})
    return p


def start_workers(state: State, devices: list[dict], env: dict[str, str]) -> None:
    """One stock ``dask worker`` per device, started in its namespace and cgroups."""
    netns = state.data["mode"] == "netns"
    cg = Cgroups.from_dict(state.data["cgroups"]) if netns else None
    for rec in devices:
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker",
               *worker_flags(state.data["scheduler"], rec["name"], rec["kind"], rec["memory_limit_bytes"]),
               "--host", rec["ip"], *tls.worker_args(state, rec["name"])]
        rec["command"] = " ".join(["dask worker", *cmd[3:]])
        # cg is there exactly when the devices have namespaces (and so cgroups)
        preexec = _enter_device(str(network.NETNS_DIR / rec["netns"]), cg.procs_files(rec["name"])) if cg else None
        dev_env = {**env, "MCDASK_DEVICE_NAME": rec["name"], "MCDASK_DEVICE_KIND": rec["kind"]}
        if cg:
            dev_env[compute_threads.ENV] = cg.compute_threads_file(rec["name"])
        p = spawn(state, "worker", rec["name"], cmd, dev_env, preexec)
        rec["pid"] = p.pid
        rec["pid_start"] = processes.start_time(p.pid)
    state.save()


def _enter_device(netns_path: str, procs_files: list[str]) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        pid = str(os.getpid())
        for f in procs_files:
            with open(f, "w") as fh:
                fh.write(pid)
        network.enter_netns(netns_path)
    return preexec


def worker_alive(rec: dict) -> bool:
    """Whether the device's worker process still runs (and is the one the farm started)."""
    pid = rec.get("pid")
    if not pid or not processes.alive(pid):
        return False
    return rec.get("pid_start") is None or processes.start_time(pid) == rec["pid_start"]


def wait_registered(state: State, devices: list[dict], *, timeout_s: float, log: Log) -> float:
    """Wait until every device of ``devices`` is registered with the scheduler; record each
    worker's address. Returns the seconds it took."""
    names = {r["name"] for r in devices}
    t0 = time.monotonic()
    with tls.client(state, "60s") as client:
        while True:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            by_name = {w["name"]: addr for addr, w in workers.items()}
            if names <= set(by_name):
                break
            for r in devices:
                if r["name"] not in by_name and not worker_alive(r):
                    raise FarmError(f"worker {r['name']} exited while starting: {tail(state, r['name'])}")
            if time.monotonic() - t0 > timeout_s:
                missing = sorted(names - set(by_name))
                raise FarmError(f"workers {missing} did not register with {state.data['scheduler']} within "
                                f"{timeout_s:.0f} s; see {state.dir / 'logs'}")
            time.sleep(0.5)
    for r in devices:
        r["address"] = by_name[r["name"]]
    state.save()
    took = round(time.monotonic() - t0, 1)
    log(f"  {len(devices)} workers registered after {took} s")
    return took


# --------------------------------------------------------------------------------------- teardown

def device_pids(rec: dict, cg: Cgroups | None) -> list[int]:
    """Every live process of the device: its worker and whatever else is in its cgroups."""
    pids = set(cgroups.cgroup_pids(cg.all_dirs(rec["name"]))) if cg else set()
    if worker_alive(rec):
        pids.add(rec["pid"])
    return sorted(p for p in pids if processes.alive(p))


def tear_down_device(state: State, rec: dict, log: Log) -> None:
    """Remove everything of one device: its processes, TAPs (their qdiscs go with them),
    namespace and cgroups; then drop it from the state's resources. Its delay-line threads
    end when their TAPs disappear."""
    cg = Cgroups.from_dict(state.data["cgroups"]) if state.data.get("cgroups") else None
    if cg and cg.freezer_dir(rec["name"]):
        cg.set_frozen(rec["name"], False)  # a frozen v1 cgroup holds SIGKILL back
    processes.kill_pids(device_pids(rec, cg) + (network.netns_pids(rec["netns"]) if rec.get("netns") else []))
    if state.data["mode"] != "netns":
        return
    host_if, ns_if = rec["taps"]
    network.delete_link(host_if)
    system.sh("ip", "link", "del", ns_if, netns=rec["netns"], check=False)
    network.delete_netns(rec["netns"])
    busy = [d for d in (cg.all_dirs(rec["name"]) if cg else []) if not cgroups.remove_cgroup_tree(d)]
    res = state.data["resources"]
    res["links"] = [x for x in res.get("links", []) if x != host_if]
    res["qdiscs"] = [q for q in res.get("qdiscs", []) if q[0] not in (host_if, ns_if)]
    res["netns"] = [x for x in res.get("netns", []) if x != rec["netns"]]
    state.save()
    if busy:
        raise FarmError(f"{rec['name']}: cgroups still busy after its processes were killed: {busy}")
    log(f"  {rec['name']}: removed namespace {rec['netns']}, links {host_if}/{ns_if}, cgroups")


def tail(state: State, name: str, n: int = 15) -> str:
    """The last ``n`` lines of a farm process's log."""
    try:
        lines = (state.dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])
