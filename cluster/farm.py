"""Bring an emulated farm up, report on it, cap or uncap it, and take it down.

``up`` starts a Dask scheduler on this host (on the farm bridge, ``10.77.0.1``) and one stock
``dask worker`` per device, each in its own network namespace and cgroup (see
``cluster.network`` and ``cluster.cgroups``). Order matters:

1. measure this host's whole-AlexNet time (``cluster.calibrate.host_time_s``) at the farm's
   CPU weight (``Cgroups.prioritise``: the devices come first on a busy host, up to their quotas);
2. build the bridge, namespaces, TAP links with the delay line ``cluster.linkd`` and ``tc``
   rate limits, and the cgroups (memory limit
   from the start, no CPU limit yet);
3. start the scheduler, then the workers; each gets its runtime ready in ``cluster.preload``
   before registering: TensorFlow, or with ``backend="litert"`` LiteRT and no TensorFlow;
4. when every worker has registered, apply the CPU quotas: each device's model threads
   (TensorFlow's, or LiteRT's model thread, placed by ``cluster.preload``) run in its
   ``compute`` cgroup at the calibrated share, sized on TensorFlow's AlexNet time either way; the
   whole device (compute plus every Python thread) gets that plus the kind's ``runtime_share``.
   With ``verify`` (default) every device's compute quota is corrected in a closed loop on its
   own sustained AlexNet time until it is within 5 % of its target (``cluster.closed_loop``; a
   litert farm times LiteRT's AlexNet against the target times LiteRT's speed-up on this host).

The per-device steps (record, network, cgroups, worker, registration) live in
``cluster.provision``, shared with ``farm add`` (``cluster.membership``); faults on a running
farm are ``cluster.faults``; ``status`` is ``cluster.status``.

Everything made is written to a state file as soon as it exists, so ``down`` cleans up after
a crash or a kill of ``up``; ``down`` also finds leftovers by name (prefix ``mcd``), by
cgroup (``mcdask-farm``) and by the ``MCDASK_FARM_MEMBER`` variable of processes it started.
Without root or namespaces ``up`` starts plain local worker processes instead and says that
CPU and network are not capped.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask.config

from mcdask.runtime.pieces import BACKENDS

from . import cgroups, closed_loop, network, processes, system, tls
from . import provision as pv
from .cgroups import Cgroups
from .devices import CALIBRATION_WORKLOAD, FarmSpec
from .errors import FarmError
from .state import STATE_VERSION, State, state_dir
from .status import status

#: how a farm tells its devices' ``cluster.preload`` which runtime to get ready
BACKEND_ENV = "DASK_MCDASK__WORKER__BACKEND"

__all__ = ["State", "down", "leftovers", "measure_link", "set_caps", "state_dir", "status", "up"]

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------- up

def up(spec: FarmSpec, *, time_scale: float = 1.0, port: int = 8786, dashboard_port: int = 8787,
       verify: bool = True, extra_env: dict[str, str] | None = None, host_time_s: float | None = None,
       start_timeout_s: float = 600, allow_fallback: bool = True, use_tls: bool = False,
       backend: str | None = None, calibration_span_s: float | None = None, log: Log = print) -> dict:
    """Start the farm described by ``spec`` (under mutual TLS with ``use_tls``: ``cluster.tls``),
    its devices ready to run ``backend`` (``cluster.preload``; default ``mcdask.worker.backend``),
    each calibration round timing them for ``calibration_span_s`` (default
    ``closed_loop.MIN_SPAN_S``); returns ``status()``."""
    backend = backend or dask.config.get("mcdask.worker.backend")
    if time_scale <= 0:
        raise FarmError(f"--time-scale must be > 0, got {time_scale}")
    if backend not in BACKENDS:
        raise FarmError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    existing = leftovers()
    if any(existing.values()):
        raise FarmError(f"a farm (or what is left of one) exists: {_describe(existing)}; "
                        "run `mcdask farm down` first")
    reason = system.probe()
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
        if backend == "litert":
            # the quotas stay sized on TensorFlow's time; LiteRT's, in the same ratio, checks them
            # their ratio from as long of interleaved calls as a calibration round lasts
            calibration["litert"] = host_time_s_measure("litert", relative_to="tensorflow",
                                                        seconds=calibration_span_s or closed_loop.MIN_SPAN_S)
            log(f"  host {CALIBRATION_WORKLOAD} on LiteRT: {calibration['litert']['host_time_s'] * 1e3:.1f} ms, "
                f"{calibration['litert']['ratio']:.3f} x TensorFlow's (interleaved)")
    dev_records = [pv.device_record(d.name, d.kind, d.index, mode, calibration.get("host_time_s"), time_scale)
                   for d in devices]
    if mode == "netns":
        pv.warn_if_oversubscribed(dev_records, log)

    sdir = state_dir()
    host = network.HOST_IP if mode == "netns" else "127.0.0.1"
    state = State(sdir, {
        "version": STATE_VERSION, "mode": mode, "phase": "starting",
        "created_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "not_capped_reason": reason, "spec": spec.to_dict(), "time_scale": time_scale,
        "calibration": calibration, "scheduler": f"{'tls' if use_tls else 'tcp'}://{host}:{port}",
        "dashboard": f"http://{host}:{dashboard_port}/status", "cpu_capped": False,
        "cpu_cap_applied": None, "devices": dev_records, "backend": backend,
        "extra_env": {**(extra_env or {}), BACKEND_ENV: backend},
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
        if use_tls:
            tls.enable(state)
            log(f"mutual TLS: CA and certificates in {state.data['tls']['dir']}; the scheduler admits a worker "
                "only with the certificate of the device it claims to be")
        env = pv.base_env(spec, state.data["extra_env"])
        _start_scheduler(state, host, port, dashboard_port, env)
        pv.start_workers(state, state.data["devices"], env)
        log(f"waiting for {len(devices)} workers to import {'LiteRT' if backend == 'litert' else 'TensorFlow'} "
            "and register...")
        state.data["workers_ready_after_s"] = pv.wait_registered(state, state.data["devices"],
                                                                 timeout_s=start_timeout_s, log=log)
        if mode == "netns":
            set_caps(True, state=state)
            if verify:
                log(f"calibrating every device: its sustained AlexNet time under its CPU quotas, within "
                    f"{closed_loop.TOLERANCE:.0%} of its target...")
                closed_loop.calibrate_devices(state, state.data["devices"], start_timeout_s, log,
                                              calibration_span_s or closed_loop.MIN_SPAN_S)
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


def host_time_s_measure(backend: str = "tensorflow", relative_to: str | None = None, seconds: float = 10.0) -> dict:
    """This host's whole-model time on ``backend`` (and its ratio to ``relative_to``'s, from
    ``seconds`` of interleaved calls), measured at the farm's CPU weight (``Cgroups.prioritise``)."""
    from .calibrate import host_time_s

    timing = Cgroups.detect().host_timing_dir()
    try:
        return host_time_s(CALIBRATION_WORKLOAD, cgroup=timing, backend=backend, relative_to=relative_to,
                           seconds=seconds)
    finally:
        cgroups.remove_cgroup_tree(timing)


def _build_network(state: State, log: Log) -> None:
    network.add_bridge()
    state.made("bridge", network.BRIDGE)
    cg = Cgroups.detect()
    state.data["cgroups"] = cg.to_dict()
    for base in cg.bases:
        state.made("cgroups", base)
    devices = state.data["devices"]
    pv.build_devices(state, devices, cg, "linkd")
    kinds: dict[str, dict] = {}
    for rec in devices:
        kinds.setdefault(rec["kind"], rec)
    log(f"network: bridge {network.BRIDGE} {network.HOST_IP}/24, {len(devices)} namespaces; "
        + "; ".join(f"{k}: {r['link_mbit']:g} Mbit/s, RTT {r['rtt_ms']:g} ms device<->device"
                    for k, r in kinds.items()))


def _start_scheduler(state: State, host: str, port: int, dashboard_port: int, env: dict[str, str]) -> None:
    if _port_busy(host, port):
        raise FarmError(f"port {host}:{port} is already in use; pass --port to choose another")
    cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", str(port),
           "--dashboard-address", f"{host}:{dashboard_port}", *tls.scheduler_args(state)]
    p = pv.spawn(state, "scheduler", "scheduler", cmd, env)
    deadline = time.monotonic() + 60
    while not _port_busy(host, port):
        if p.poll() is not None:
            raise FarmError(f"the scheduler exited ({p.returncode}): {pv.tail(state, 'scheduler')}")
        if time.monotonic() > deadline:
            raise FarmError(f"the scheduler did not listen on {host}:{port} within 60 s: {pv.tail(state, 'scheduler')}")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------- caps

def set_caps(on: bool, state: State | None = None) -> dict:
    """Apply (``on``) or lift every device's CPU quota; the memory limit stays."""
    state = state or State.load()
    if state is None:
        raise FarmError("no farm is up (no state file); run `mcdask farm up` first")
    if state.data["mode"] != "netns":
        raise FarmError(f"this farm runs without cgroups ({state.data.get('not_capped_reason')}); "
                        "there is no CPU quota to change")
    cg = Cgroups.from_dict(state.data["cgroups"])
    for r in state.data["devices"]:
        pv.apply_caps(cg, r, on)
    state.data["cpu_capped"] = on
    if on:
        state.data["cpu_cap_applied"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    state.save()
    return status(state)


# --------------------------------------------------------------------------------------- down

def leftovers() -> dict[str, list]:
    """Everything of a farm that exists now, found by state file and by name."""
    state = State.load()
    root = os.geteuid() == 0
    out: dict[str, list] = {
        "state": [str(state.path)] if state else [],
        "processes": sorted(set(processes.marked_pids())),
        "netns": network.our_netns() if root else [],
        "links": network.our_links() if root else [],
        "qdiscs": network.our_qdiscs() if root else [],
        "cgroups": cgroups.find_farm_cgroups() if root else [],
    }
    return out


def down(log: Log = print) -> dict:
    """Remove every process, qdisc, link, namespace and cgroup of the farm; harmless to repeat."""
    state = State.load()
    res = state.data.get("resources", {}) if state else {}
    root = os.geteuid() == 0
    removed: dict[str, list] = {}

    pids = set(processes.marked_pids())
    for p in res.get("pids", []):
        if processes.alive(p["pid"]) and processes.start_time(p["pid"]) == p.get("start"):
            pids.add(p["pid"])
    cgroup_bases = sorted(set(res.get("cgroups", [])) | (set(cgroups.find_farm_cgroups()) if root else set()))
    netns = sorted(set(res.get("netns", [])) | set(network.our_netns() if root else []))
    for base in cgroup_bases:
        cgroups.thaw_cgroup_tree(base)  # a frozen device would not die
        pids.update(cgroups.cgroup_pids([str(p) for p in Path(base).glob("*") if p.is_dir()] + [base]))
    for ns in netns:
        pids.update(network.netns_pids(ns))
    removed["processes"] = processes.kill_pids(sorted(pids))

    links = sorted(set(res.get("links", [])) | set(network.our_links() if root else []),
                   key=lambda n: n == network.BRIDGE)  # the bridge last
    # a device's qdiscs go with its TAPs (host side) and its namespace (device side)
    removed["qdiscs"] = sorted({q[0] for q in res.get("qdiscs", [])} | set(network.our_qdiscs() if root else []))
    for name in links:
        network.delete_link(name)
    removed["links"] = links
    for ns in netns:
        network.delete_netns(ns)
    removed["netns"] = netns
    failed = [b for b in cgroup_bases if not cgroups.remove_cgroup_tree(b)]
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


# --------------------------------------------------------------------------------------- checks

def measure_link(src: str | None, dst: str, nbytes: int = 8_000_000, pings: int = 20, port: int = 5201) -> dict:
    """TCP bandwidth and RTT from device ``src`` (``None``: this host) to device ``dst``, with
    ``cluster.netcheck`` running in their namespaces."""
    state = State.load()
    if state is None or state.data["mode"] != "netns":
        raise FarmError("measure_link needs a running farm with namespaces (`mcdask farm up` as root)")
    recs = {name: state.device(name) for name in filter(None, (src, dst))}
    env = pv.base_env(None, None)
    py = [sys.executable, "-m", "cluster.netcheck"]
    server = subprocess.Popen(["ip", "netns", "exec", recs[dst]["netns"], *py, "serve", "--host", recs[dst]["ip"],
                               "--port", str(port), "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**env, processes.MEMBER_ENV: "netcheck:serve"})
    assert server.stdout is not None and server.stderr is not None, "started with both piped"
    try:
        if b"listening" not in server.stdout.readline():
            raise FarmError(f"netcheck server did not start: {server.stderr.read().decode()[-500:]}")
        cmd = [*py, "measure", recs[dst]["ip"], "--port", str(port), "--bytes", str(nbytes),
               "--pings", str(pings), "--json"]
        if src:
            cmd = ["ip", "netns", "exec", recs[src]["netns"], *cmd]
        out = system.run_json(cmd, timeout_s=300, env={**env, processes.MEMBER_ENV: "netcheck:measure"})
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
