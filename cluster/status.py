"""What the farm and each of its devices are doing now, read from the system itself.

A device's ``state`` is one of ``running``, ``frozen`` (its freezer cgroup is frozen or its
processes are stopped), ``cut`` (a TAP of its link is down) and ``killed`` (its worker process
is gone), in that order of precedence: a frozen device whose link is cut reads ``frozen`` with
``link_up: false``. It is probed each time, not remembered, so it stays true whatever changed
the device (``mcdask farm kill``, the kernel's OOM killer, a hand-typed ``ip link``).
"""

from __future__ import annotations

from . import network, processes, tls
from .cgroups import Cgroups
from .devices import format_bytes
from .provision import device_pids, worker_alive
from .state import State

FREEZER_NAMES = {1: "freezer cgroup (v1)", 2: "cgroup.freeze (v2)"}
SIGSTOP = "SIGSTOP"


def frozen_by(rec: dict, cg: Cgroups | None) -> str | None:
    """How the device is frozen (its freezer cgroup, or SIGSTOP of its processes), or ``None``."""
    if cg and cg.freezer_state(rec["name"]) in ("frozen", "freezing"):
        return FREEZER_NAMES[cg.version]
    pids = device_pids(rec, cg)
    if pids and all(processes.process_state(p) in ("T", "t") for p in pids):
        return SIGSTOP
    return None


def link_up(rec: dict, mode: str) -> bool:
    """Whether both TAPs of the device's link are up (always true without namespaces)."""
    if mode != "netns":
        return True
    host_if, ns_if = rec["taps"]
    return network.link_is_up(host_if) and network.link_is_up(ns_if, netns=rec["netns"])


def device_state(rec: dict, cg: Cgroups | None, mode: str) -> dict:
    """``state`` (see the module docstring) with its parts: ``alive``, ``frozen_by``, ``link_up``."""
    alive = worker_alive(rec)
    frozen = frozen_by(rec, cg) if alive else None
    up = link_up(rec, mode)
    state = "killed" if not alive else "frozen" if frozen else "running" if up else "cut"
    return {"state": state, "alive": alive, "frozen_by": frozen, "link_up": up}


def device_status(state: State, rec: dict) -> dict:
    """One device's status record: its state-file record, its state now and the quotas now."""
    cg = Cgroups.from_dict(state.data["cgroups"]) if state.data.get("cgroups") else None
    out = {k: v for k, v in rec.items() if k != "command"}
    out.update(device_state(rec, cg, state.data["mode"]))
    if cg:
        q = cg.read_cpu(rec["name"], compute=True)
        out["cpu_quota_now"] = None if q is None else {"quota_us": q[0], "period_us": q[1]}
        q = cg.read_cpu(rec["name"])
        out["device_quota_now"] = None if q is None else {"quota_us": q[0], "period_us": q[1]}
    out["memory_limit"] = format_bytes(rec["memory_limit_bytes"])
    return out


def status(state: State | None = None, query_scheduler: bool = False) -> dict:
    """Plain data about the farm: mode, scheduler, calibration and one record per device."""
    from .farm import leftovers

    state = state or State.load()
    if state is None:
        left = leftovers()
        return {"up": False, "devices": [], "leftovers": left if any(left.values()) else {}}
    d = state.data
    out = {"up": d.get("phase") == "up", "phase": d.get("phase"), "mode": d["mode"],
           "cpu_capped": d["mode"] == "netns" and d.get("cpu_capped", False),
           "network_shaped": d["mode"] == "netns",
           "not_capped_reason": d.get("not_capped_reason"),
           "scheduler": d["scheduler"], "dashboard": d.get("dashboard"), "time_scale": d["time_scale"],
           "backend": d.get("backend", "tensorflow"),
           "calibration": d.get("calibration"), "verification": d.get("verification"),
           "cpu_cap_applied": d.get("cpu_cap_applied"),
           "cpu_cap_note": "quotas are applied after the workers got their runtime ready and registered",
           "created_at": d.get("created_at"), "state_file": str(state.path), "tls": tls.client_files(state),
           "devices": [device_status(state, r) for r in d["devices"]]}
    if query_scheduler:
        out["registered"] = _registered(state)
    return out


def _registered(state: State) -> list[str] | None:
    try:
        with tls.client(state, "5s") as c:
            return sorted(w["name"] for w in c.scheduler_info(n_workers=-1)["workers"].values())
    except Exception:  # noqa: BLE001 - status must not fail because the scheduler is gone
        return None
