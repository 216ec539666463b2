"""The scheduler's gate: a worker joins only as the device its certificate names.

Mutual TLS proves a peer holds a certificate of the deployment's CA; it says nothing about the
name a worker registers under, and the name decides which slices and tasks it gets. The gate
(a scheduler plugin) wraps the scheduler's ``register-worker`` handler: a worker is refused,
as Dask refuses a duplicate name, unless the certificate on its connection
(``comm.extra_info["peercert"]``, verified by the TLS handshake) is a device's whose common
name equals the worker's name. Nothing the worker says about itself is trusted. Workers that
registered before the gate was installed are checked on their stream connection and removed
when they fail. Every refusal is a scheduler event on topic ``mcdask-gate``.

Install it with ``dask scheduler --preload mcdask.security.gate`` (before any worker joins), or
let mcdask register it on a ``tls://`` scheduler (``guard``: on connecting, and at every deploy).
"""

from __future__ import annotations

import logging
import time
from collections import deque

from distributed.diagnostics.plugin import SchedulerPlugin

from mcdask.security.certs import identity

NAME = "mcdask-device-gate"
TOPIC = "mcdask-gate"
#: refusals the gate remembers (the latest; each is also a scheduler event)
KEEP_REFUSED = 100
log = logging.getLogger("mcdask.security.gate")


def refusal(peercert: dict | None, name) -> str | None:
    """Why a worker registering as ``name`` with ``peercert`` may not join; None if it may."""
    cn, role = identity(peercert)
    if cn is None:
        return f"worker {name!r} has no verified certificate (mcdask's gate needs mutual TLS)"
    if role != "device":
        return f"worker {name!r} presents a {role or 'non-mcdask'} certificate ({cn!r}), not a device's"
    if cn != str(name):
        return f"worker {name!r} presents the certificate of device {cn!r}"
    return None


def _peercert(comm) -> dict | None:
    return (getattr(comm, "extra_info", None) or {}).get("peercert") if comm is not None else None


class DeviceGate(SchedulerPlugin):
    """Admit a worker only when its TLS certificate names it (see the module docstring)."""

    name = NAME
    idempotent = True

    def __init__(self):
        self.refused: deque[dict] = deque(maxlen=KEEP_REFUSED)   # a worker may retry for ever

    async def start(self, scheduler) -> None:
        original = scheduler.handlers["register-worker"]
        if getattr(original, "mcdask_gate", False):
            return

        async def register_worker(comm, *, name, address, **kwargs):
            why = refusal(_peercert(comm), name)
            if why is None:
                return await original(comm, name=name, address=address, **kwargs)
            self._refuse(scheduler, name, address, why)
            await comm.write({"status": "error", "message": f"refused by mcdask: {why}", "time": time.time()})

        register_worker.mcdask_gate = True  # type: ignore[attr-defined]
        scheduler.handlers["register-worker"] = register_worker
        for address, ws in list(scheduler.workers.items()):
            stream = scheduler.stream_comms.get(address)
            why = refusal(_peercert(getattr(stream, "comm", None)), ws.name)
            if why is not None:
                self._refuse(scheduler, ws.name, address, why)
                await scheduler.remove_worker(address, stimulus_id=f"mcdask-gate-{time.time()}", close=True)

    def _refuse(self, scheduler, name, address: str, why: str) -> None:
        entry = {"worker": str(name), "address": address, "reason": why}
        self.refused.append(entry)
        scheduler.log_event(TOPIC, {"action": "refused", **entry})
        log.warning("mcdask: refused %s", why)


def guard(client):
    """Register the gate on ``client``'s scheduler if it is a ``tls://`` one (idempotent: a
    preloaded gate stays); returns ``client``. Impostors already there are removed."""
    if client.scheduler.address.startswith("tls://"):
        client.register_plugin(DeviceGate())
    return client


def refused(dask_scheduler) -> list[dict]:
    """(On the scheduler, through ``client.run_on_scheduler``) every worker the gate refused."""
    gate = dask_scheduler.plugins.get(NAME)
    return list(gate.refused) if gate is not None else []


async def dask_setup(scheduler) -> None:
    """``dask scheduler --preload mcdask.security.gate``: the gate from the scheduler's start."""
    await scheduler.register_scheduler_plugin(DeviceGate(), idempotent=True)
