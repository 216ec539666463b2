"""Faults on a running farm's devices, for tests, demos and benchmarks.

``kill(name)``
    SIGKILL every process of the device: a device unplugged. No nanny restarts it.
``freeze(name)`` / ``thaw(name)``
    The whole device hangs and resumes. Its freezer cgroup (v1 ``freezer.state``, v2
    ``cgroup.freeze``) stops every thread at once; a farm without one falls back to SIGSTOP /
    SIGCONT of the device's processes, and status says which (``frozen_by``).
``cut(name)`` / ``heal(name)``
    The device's link goes down and comes back: both TAPs of its link (``mcdh<i>`` on the
    host's bridge, ``mcdn<i>`` in its namespace) are set administratively down, so no frame
    passes either way and the device's kernel drops its route, as a Pi whose WiFi drops out.
    Open TCP connections stay open and retransmit; they recover on heal if the cut is shorter
    than their timeout (Dask sets 30 s). Heal waits until this host reaches the device again.

Each returns the device's status record (``cluster.status.device_status``) and raises
``FarmError`` when no farm is up, the device is unknown, or the action does not fit the
device's state (``thaw`` of a device that is not frozen, anything but ``remove`` on a killed
device, ...). The state is probed from the system each time, so none of these write the
state file. ``remove`` (a clean leave) is ``cluster.membership.remove``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from . import network, processes, system
from .cgroups import Cgroups
from .errors import FarmError
from .provision import device_pids
from .state import State
from .status import SIGSTOP, device_state, device_status

#: how long a signalled or frozen device may take to reach the state asked for
SETTLE_TIMEOUT_S = 10
#: how long the host may take to reach a device again after its link comes up
HEAL_TIMEOUT_S = 10

Refusal = Callable[[dict], "str | None"]


def kill(name: str) -> dict:
    """SIGKILL every process of device ``name`` and wait until they are gone. A frozen v1
    cgroup holds SIGKILL back, so a frozen device is thawed after the signal: it dies, it
    does not run again."""
    state, rec, cg = _target(name, "kill", _refuse_nothing_more)
    pids = device_pids(rec, cg)
    _signal(pids, signal.SIGKILL)
    if cg and cg.freezer_state(name) in ("frozen", "freezing"):
        cg.set_frozen(name, False)
    system.wait_until(lambda: not any(processes.alive(p) for p in pids), SETTLE_TIMEOUT_S,
                  f"{name}'s processes {pids} to exit after SIGKILL")
    return device_status(state, rec)


def freeze(name: str) -> dict:
    """Stop every thread of device ``name`` (freezer cgroup, else SIGSTOP) and wait until
    all are stopped."""
    state, rec, cg = _target(name, "freeze", _refuse_unless_thawed)
    if cg and cg.freezer_dir(name):
        cg.set_frozen(name, True)
        system.wait_until(lambda: cg.freezer_state(name) == "frozen", SETTLE_TIMEOUT_S,
                      f"{name}'s freezer cgroup {cg.freezer_dir(name)} to read frozen")
    else:
        pids = device_pids(rec, cg)
        _signal(pids, signal.SIGSTOP)
        system.wait_until(lambda: all(processes.process_state(p) in ("T", "t", None) for p in pids), SETTLE_TIMEOUT_S,
                      f"{name}'s processes {pids} to stop after SIGSTOP")
    return device_status(state, rec)


def thaw(name: str) -> dict:
    """Let a frozen device ``name`` run again, the way it was frozen."""
    state, rec, cg = _target(name, "thaw", _refuse_unless_frozen)
    if device_state(rec, cg, state.data["mode"])["frozen_by"] == SIGSTOP:
        pids = device_pids(rec, cg)
        _signal(pids, signal.SIGCONT)
        system.wait_until(lambda: not any(processes.process_state(p) in ("T", "t") for p in pids), SETTLE_TIMEOUT_S,
                      f"{name}'s processes {pids} to run after SIGCONT")
    else:
        assert cg is not None, "a device frozen by other than SIGSTOP was frozen by its freezer cgroup"
        cg.set_frozen(name, False)
        system.wait_until(lambda: cg.freezer_state(name) == "thawed", SETTLE_TIMEOUT_S,
                      f"{name}'s freezer cgroup {cg.freezer_dir(name)} to read thawed")
    return device_status(state, rec)


def cut(name: str) -> dict:
    """Take both TAPs of device ``name``'s link down: no frame passes either way."""
    state, rec, _ = _target(name, "cut", _refuse_unless_link_up)
    host_if, ns_if = rec["taps"]
    network.set_link_up(host_if, False)
    network.set_link_up(ns_if, False, netns=rec["netns"])
    return device_status(state, rec)


def heal(name: str) -> dict:
    """Bring both TAPs of device ``name``'s link up again and wait until this host reaches
    the device (its kernel answers a TCP connection)."""
    state, rec, _ = _target(name, "heal", _refuse_unless_cut)
    host_if, ns_if = rec["taps"]
    network.set_link_up(ns_if, True, netns=rec["netns"])
    network.set_link_up(host_if, True)
    system.wait_until(lambda: network.reachable(rec["ip"], timeout_s=0.5), HEAL_TIMEOUT_S,
                  f"this host to reach {name} at {rec['ip']} after its link came up", poll_s=0.1)
    return device_status(state, rec)


# --------------------------------------------------------------------------------------- helpers

def _target(name: str, action: str, refuse: Refusal) -> tuple[State, dict, Cgroups | None]:
    """The running farm, device ``name``'s record and the farm's cgroups, once ``refuse``
    found nothing against ``action`` in the device's state now."""
    state = State.running()
    rec = state.device(name)
    cg = Cgroups.from_dict(state.data["cgroups"]) if state.data.get("cgroups") else None
    now = device_state(rec, cg, state.data["mode"])
    if now["state"] == "killed":
        raise FarmError(f"cannot {action} {name}: its worker process is gone (killed); only "
                        f"`mcdask farm remove {name}` applies")
    why = refuse({**now, "mode": state.data["mode"]})
    if why:
        raise FarmError(f"cannot {action} {name}: {why}")
    return state, rec, cg


def _refuse_nothing_more(now: dict) -> str | None:
    """For ``kill``: every state but ``killed`` fits, and ``_target`` refuses that one."""
    return None


def _refuse_unless_thawed(now: dict) -> str | None:
    return f"it is already frozen (by {now['frozen_by']})" if now["frozen_by"] else None


def _refuse_unless_frozen(now: dict) -> str | None:
    return None if now["frozen_by"] else f"it is {now['state']}, not frozen"


def _refuse_without_links(now: dict) -> str | None:
    if now["mode"] != "netns":
        return "this farm runs without namespaces (local fallback): its devices have no link"
    return None


def _refuse_unless_link_up(now: dict) -> str | None:
    return _refuse_without_links(now) or (None if now["link_up"] else "its link is already cut")


def _refuse_unless_cut(now: dict) -> str | None:
    return _refuse_without_links(now) or (None if not now["link_up"] else
                                          f"its link is up (state {now['state']}); there is nothing to heal")


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
