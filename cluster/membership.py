"""Devices joining and leaving a running farm.

``add(k, kind)``
    ``k`` new devices of ``kind`` join: each gets a namespace, a shaped TAP link (one more
    delay line process for the new devices, recorded so ``farm down`` ends it), cgroups with
    the kind's memory limit, and the same stock ``dask worker`` command as ``farm up``. Once
    they registered, their CPU quotas are applied (if the farm's are on). A kind the farm
    already has gets the median of its devices' calibrated shares (no new calibration); a
    kind new to the farm gets the share ``farm up`` computes from the farm's host AlexNet
    time (not verified).
    Names and addresses continue the farm's numbering and are never reused (``pi3-06``).
``remove(name)``
    A clean leave: the scheduler retires the worker (``Client.retire_workers``: its data
    moves to other workers, then it closes and its process exits, with its CPU quotas lifted
    so that takes about 1 s), then its namespace, links (their qdiscs with them),
    cgroups and any process left are removed, and it leaves the device list. A killed
    device is removed too (the scheduler forgets it); a frozen or cut one is refused: it
    cannot leave cleanly.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Callable

from . import processes, system, tls
from . import provision as pv
from .cgroups import Cgroups
from .devices import DeviceKind, FarmSpec, spec_from_dict
from .errors import FarmError, FarmSpecError
from .state import State
from .status import device_state, device_status

#: how long a retired worker's process may take to exit
EXIT_TIMEOUT_S = 30
#: the farm's /24 subnet: device index i is 10.77.0.(10 + i); ``FarmSpec`` allows 200 devices
MAX_DEVICE_INDEX = 199
Log = Callable[[str], None]


# --------------------------------------------------------------------------------------- add

def add(k: int, kind: str | None = None, *, timeout_s: float = 600, log: Log = print) -> list[dict]:
    """Join ``k`` devices of ``kind`` (default: the farm's first kind) to the running farm;
    returns their status records once they are registered and capped."""
    if k < 1:
        raise FarmError(f"add needs at least one device, got {k}")
    with State.locked(f"farm add --devices {k}", timeout_s=timeout_s) as state:
        spec = spec_from_dict(state.data["spec"], "the farm's spec")
        kind_def = _kind(spec, kind)
        new = _new_records(state, kind_def, k)
        state.data["devices"].extend(new)
        state.save()
        try:
            _join(state, spec, new, timeout_s, log)
        except BaseException as e:
            log(f"farm add failed ({type(e).__name__}: {e}); removing {', '.join(r['name'] for r in new)}")
            _undo(state, new, log)
            raise
        return [device_status(state, r) for r in new]


def _kind(spec: FarmSpec, name: str | None) -> DeviceKind:
    """The kind to add: the farm's own definition if it has one, else a built-in kind."""
    name = name or spec.counts[0][0]
    if name not in spec.kinds:
        raise FarmSpecError(f"unknown device kind {name!r}; kinds: {', '.join(sorted(spec.kinds))}")
    return spec.kinds[name]


def _new_records(state: State, kind: DeviceKind, k: int) -> list[dict]:
    """Records of ``k`` new devices, numbered after every device the farm ever had."""
    ever = state.data["devices"] + state.data.get("removed", [])
    index = 1 + max(r["index"] for r in ever)
    if index + k - 1 > MAX_DEVICE_INDEX:
        raise FarmError(f"no room for {k} more devices: device indices end at {MAX_DEVICE_INDEX} (the farm's "
                        f"/24 subnet); the next free one is {index}")
    numbers = [int(r["name"].rsplit("-", 1)[1]) for r in ever
               if r["kind"] == kind.name and r["name"].rsplit("-", 1)[1].isdigit()]
    first = 1 + max(numbers, default=-1)
    d = state.data
    host_time_s = (d.get("calibration") or {}).get("host_time_s")
    recs = []
    for i in range(k):
        rec = pv.device_record(f"{kind.name}-{first + i:02d}", kind, index + i, d["mode"], host_time_s,
                               d["time_scale"])
        if d["mode"] == "netns":
            rec.update(_calibrated_cpu(state, kind.name, rec))
        recs.append(rec)
    return recs


def _calibrated_cpu(state: State, kind: str, rec: dict) -> dict:
    """The CPU fields of a new device of ``kind``: the median share of the farm's devices of
    that kind (each calibrated by ``farm up``'s closed loop), else the open-loop share."""
    peers = [r for r in state.data["devices"] + state.data.get("removed", [])
             if r["kind"] == kind and r.get("cpu_share") and r["name"] != rec["name"]]
    if not peers:
        return {"cpu_share_from": "open loop: host AlexNet time / the kind's (kind new to the farm; not verified)"}
    share = statistics.median(r["cpu_share"] for r in peers)
    return {**pv.cpu_fields(share, peers[0]["runtime_share"]), "target_alexnet_s": peers[0]["target_alexnet_s"],
            "cpu_share_from": f"the median share of the farm's {len(peers)} {kind} devices (calibrated)"}


def _join(state: State, spec: FarmSpec, new: list[dict], timeout_s: float, log: Log) -> None:
    """Build the new devices, start their workers, wait for them to register, cap them."""
    netns = state.data["mode"] == "netns"
    cg = Cgroups.from_dict(state.data["cgroups"]) if netns else None
    if cg:
        linkd = f"linkd-{new[0]['index']}"
        for r in new:
            r["linkd"] = linkd
        pv.build_devices(state, new, cg, linkd)
        pv.warn_if_oversubscribed(state.data["devices"], log)
    pv.start_workers(state, new, pv.base_env(spec, state.data.get("extra_env")))
    log(f"waiting for {', '.join(r['name'] for r in new)} to get their runtime ready and register...")
    pv.wait_registered(state, new, timeout_s=timeout_s, log=log)
    if cg and state.data.get("cpu_capped"):
        for r in new:
            pv.apply_caps(cg, r, True)
    for r in new:
        r["added_at"] = _now()
    state.save()


def _undo(state: State, new: list[dict], log: Log) -> None:
    """Remove what a failed ``add`` made of its devices; ``farm down`` remains the backstop."""
    for r in new:
        try:
            pv.tear_down_device(state, r, log)
        except FarmError as e:
            log(f"  {r['name']}: {e}; `mcdask farm down` removes it")
        state.data["devices"].remove(r)
    state.save()
    if new[0].get("linkd"):
        _stop_idle_linkd(state, new[0]["linkd"])


# --------------------------------------------------------------------------------------- remove

def remove(name: str, *, timeout_s: float = 60, log: Log = print) -> dict:
    """Retire device ``name`` through the scheduler, then remove everything of it; returns
    its last record with ``state: removed``."""
    with State.locked(f"farm remove {name}") as state:
        rec = state.device(name)
        cg = Cgroups.from_dict(state.data["cgroups"]) if state.data.get("cgroups") else None
        now = device_state(rec, cg, state.data["mode"])
        if now["state"] in ("frozen", "cut"):
            undo = "thaw" if now["state"] == "frozen" else "heal"
            raise FarmError(f"cannot remove {name}: it is {now['state']} and could not leave cleanly; "
                            f"`mcdask farm {undo} {name}` first, or `mcdask farm kill {name}` and then remove it")
        leave = _leave(state, rec, cg, now["alive"], timeout_s)
        pv.tear_down_device(state, rec, log)
        state.data["devices"].remove(rec)
        gone = {**{k: v for k, v in rec.items() if k != "command"}, "state": "removed", "removed_at": _now(),
                "leave": leave}
        state.data.setdefault("removed", []).append(gone)
        state.save()
        if state.data["mode"] == "netns":
            _stop_idle_linkd(state, rec.get("linkd", "linkd"))
        return gone


def _leave(state: State, rec: dict, cg: Cgroups | None, alive: bool, timeout_s: float) -> str:
    """Have the scheduler let go of the device's worker; returns how it left. Once retired,
    the device's CPU quotas are lifted: its emulation is over, and a Python process holding
    TensorFlow takes 9-12 s to exit under a pi3 share, about 1 s without (measured here)."""
    name, address = rec["name"], rec["address"]
    with tls.client(state, "30s") as client:
        if alive:
            try:  # callback_timeout is Client.sync's: the call gives up after timeout_s
                retired = client.retire_workers(workers=[address], close_workers=True, callback_timeout=timeout_s)
            except TimeoutError:
                raise FarmError(f"waited {timeout_s:g} s for the scheduler to retire {name} ({address})") from None
            if address not in retired:
                raise FarmError(f"the scheduler did not retire {name}: it holds data no other worker can take "
                                "(see Scheduler.retire_workers); it stays in the farm")
            if cg:
                pv.apply_caps(cg, rec, False)
            system.wait_until(lambda: not pv.worker_alive(rec), EXIT_TIMEOUT_S,
                          f"{name}'s worker (pid {rec['pid']}) to exit after the scheduler retired it", poll_s=0.1)
            how = "retired by the scheduler (Client.retire_workers), then its process exited"
        else:
            if address in client.scheduler_info(n_workers=-1)["workers"]:
                client.run_on_scheduler(_forget_worker, address)
            how = "its worker was already gone (killed); the scheduler no longer lists it"
        system.wait_until(lambda: address not in client.scheduler_info(n_workers=-1)["workers"], timeout_s,
                      f"the scheduler to drop {name} ({address})", poll_s=0.2)
    return how


async def _forget_worker(address: str, dask_scheduler=None) -> str:
    """Runs on the scheduler: drop a dead worker it still lists (a device killed while its
    link was cut sent no FIN, so its connection looks open)."""
    return await dask_scheduler.remove_worker(address, stimulus_id="mcdask-farm-remove", close=False)


def _stop_idle_linkd(state: State, linkd: str) -> None:
    """End delay line ``linkd`` once no device of the farm uses it."""
    if any(r.get("linkd", "linkd") == linkd for r in state.data["devices"]):
        return
    processes.kill_pids([p["pid"] for p in state.data["resources"].get("pids", [])
                  if p["name"] == linkd and p["role"] == "linkd" and processes.start_time(p["pid"]) == p.get("start")])


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")
