"""Musical chairs: keep a stream going while devices leave, freeze, drop off the network or join.

The ``Controller`` is the stream's supervisor (``mcdask.streaming.stream.Supervisor``). Polled while the
stream runs, it looks at the scheduler's workers and decides which devices are usable:

* **registered** workers that send **heartbeats**: a worker whose heartbeat has not reached
  the scheduler for ``mcdask.controller.heartbeat-timeout`` is frozen or cut off (the
  scheduler itself would keep it for minutes); it counts again once its heartbeats have been
  fresh for ``back-after``;
* a worker that leaves the scheduler is **lost**; one that registers is **joined**, or
  **back** when its name was seen before.

When the usable set differs from the deployed one, it moves the deployment: to the plan the
stream started with when all of that plan's devices are usable again (each device gets its
old role), else to the ``PlanBook``'s plan for the devices there are, bound so that devices
keep the pieces they already hold where they can (``bind_for_reuse``: a switch builds as
little as possible). It deploys that plan and hands the stream a runner for it; the stream
resubmits the frames in flight. When no plan fits the devices left and the deployed one
cannot run, it waits ``wait-for-devices`` for a device to join, then stops the stream. A lost
scheduler stops the stream at once. Every change is an event (``mcdask.streaming.events``).

The planner never touches Dask; the runtime never re-decides a plan; this module is where
the two meet while a stream runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask.config
import dask.utils

import workloads
from mcdask.errors import DeploymentError, PlanError, ProfileError, StreamStopped
from mcdask.model.plan import Plan
from mcdask.model.profile import Profile
from mcdask.planning.planner import Strategy
from mcdask.runtime.deploy import DaskRunner, deploy, natural_key
from mcdask.streaming.events import EventLog

ProfileFor = Callable[[tuple[str, ...]], Profile]


def _seconds(key: str) -> float:
    return float(dask.utils.parse_timedelta(dask.config.get(f"mcdask.controller.{key}")))


# ---------------------------------------------------------------------------------- membership

@dataclass(frozen=True)
class Change:
    kind: str                        # lost | frozen | back | joined
    device: str
    message: str


class Membership:
    """Which registered devices are usable, from successive looks at the scheduler's workers.

    Pure bookkeeping (no Dask): ``observe`` takes ``{address: {"name", "last_seen",
    "status"}}`` as ``scheduler_info()`` gives it and returns the usable names and what
    changed since the last look. ``last_seen`` is compared with itself, never with this
    machine's clock, so the scheduler's clock may differ."""

    def __init__(self, heartbeat_timeout_s: float, back_after_s: float, clock=time.monotonic):
        self.heartbeat_timeout_s, self.back_after_s, self.clock = heartbeat_timeout_s, back_after_s, clock
        self._beat: dict[str, tuple[object, float]] = {}   # name -> (last_seen, when it last changed here)
        self._fresh_since: dict[str, float] = {}           # frozen name -> when heartbeats resumed
        self.frozen: set[str] = set()
        self.known: set[str] = set()                       # every name ever seen
        self.present: set[str] = set()

    def observe(self, workers: dict[str, dict]) -> tuple[tuple[str, ...], list[Change]]:
        now = self.clock()
        changes: list[Change] = []
        present = {}
        for info in workers.values():
            name = str(info.get("name"))
            if info.get("status", "running") not in ("running", "paused"):
                continue   # closing or retiring: leaving
            present[name] = info
            seen = info.get("last_seen")
            prev = self._beat.get(name)
            if prev is None or seen != prev[0]:
                self._beat[name] = (seen, now)
                if name in self.frozen:
                    self._fresh_since.setdefault(name, now)
        for name in sorted(self.present - set(present)):
            changes.append(Change("lost", name, f"device {name} lost: it left the scheduler"))
            self.frozen.discard(name)
            self._fresh_since.pop(name, None)
            self._beat.pop(name, None)
        for name in sorted(set(present) - self.present):
            kind = "back" if name in self.known else "joined"
            changes.append(Change(kind, name, f"device {name} {'is back' if kind == 'back' else 'joined'}"))
        for name in sorted(present):
            silent = now - self._beat[name][1]
            if name not in self.frozen and silent > self.heartbeat_timeout_s:
                self.frozen.add(name)
                self._fresh_since.pop(name, None)
                changes.append(Change("frozen", name, f"device {name} frozen or cut off: no heartbeat for "
                                                       f"{silent:.1f} s"))
            elif name in self.frozen:
                if silent > self.heartbeat_timeout_s:
                    self._fresh_since.pop(name, None)
                elif now - self._fresh_since.get(name, now) >= self.back_after_s:
                    self.frozen.discard(name)
                    del self._fresh_since[name]
                    changes.append(Change("back", name, f"device {name} is back: heartbeats resumed"))
        self.present = set(present)
        self.known |= self.present
        usable = tuple(sorted((n for n in present if n not in self.frozen), key=natural_key))
        return usable, changes

    def restart_clock(self) -> None:
        """Count silence from now (after a pause in looking, e.g. while deploying)."""
        now = self.clock()
        self._beat = {n: (seen, now) for n, (seen, _) in self._beat.items()}


# ---------------------------------------------------------------------------------- plans

def profile_for(spec: str | Profile, runtime: str | None = None) -> ProfileFor:
    """Device names -> the profile to plan them with. ``spec`` is a built-in kind (every
    device of that kind, running ``runtime``: ``mcdask.model.runtimes``) or a profile: its own
    devices where they are named in it, else, for a profile of one kind, devices of that kind."""
    from mcdask.model.kinds import homogeneous

    if isinstance(spec, str):
        return lambda names: homogeneous(spec, names=names, runtime=runtime)
    prof = spec

    def of(names: tuple[str, ...]) -> Profile:
        if all(n in prof.device_names for n in names):
            return prof.subset(names)
        if len(prof.kinds) == 1:
            return homogeneous(next(iter(prof.kinds.values())), names=names, link=prof.default_link)
        unknown = sorted(n for n in names if n not in prof.device_names)
        raise ProfileError(f"profile {prof.name!r} has several kinds and does not name devices {unknown}; "
                           "profile them (mcdask profile) to plan with them")
    return of


def plan_book(workload, profile: str | None, memory_bytes: int | None = None,
              runtime: str | None = None, baseline_bytes: int | None = None) -> PlanBook:
    """The plans a stream may move between: the planner's, on built-in kind ``profile``
    (default pi3) running ``runtime`` (default: ``mcdask.worker.backend``), or on a profile
    file; a user's model gets estimated layer times (``mcdask.model.kinds.covering``) where the
    profile has none. ``memory_bytes`` plans for devices with that much memory, ``baseline_bytes``
    for a runtime that takes that much before any slice where that is more than the profile says."""
    from dataclasses import replace

    from mcdask.model.kinds import covering

    spec = profile or "pi3"
    base = profile_for(Profile.load(spec) if Path(spec).is_file() else spec, runtime or configured_runtime())

    def sized(kind):
        if memory_bytes:
            kind = replace(kind, memory_bytes=memory_bytes)
        if baseline_bytes and baseline_bytes > kind.baseline_bytes:
            kind = replace(kind, baseline_bytes=baseline_bytes)
        return covering(kind, workload)

    def of(names: tuple[str, ...]) -> Profile:
        p = base(names)
        return replace(p, kinds={k: sized(v) for k, v in p.kinds.items()})
    return PlanBook(workload, of)


def configured_runtime(backend: str | None = None) -> str:
    """The runtime devices run: ``backend`` (a command's ``--backend``) or else
    ``mcdask.worker.backend``, with ``mcdask.worker.litert-kernels`` for litert."""
    from mcdask.model.runtimes import for_backend

    return for_backend(backend or dask.config.get("mcdask.worker.backend", None),
                       dask.config.get("mcdask.worker.litert-kernels", None))


class PlanBook:
    """The plan for any set of device names, from the planner. Devices of one kind on one
    default link are interchangeable: their plan depends only on how many there are, so it is
    made once per count (as the paper precomputes one per count) and renamed; other sets are
    planned per set. ``prepare`` plans ahead, off the stream's thread, so a switch does not
    wait for the planner."""

    def __init__(self, workload, profile: ProfileFor, strategy: Strategy = "optimal"):
        self.workload, self.profile, self.strategy = workload, profile, strategy
        self._cache: dict[object, Plan | PlanError] = {}
        self._lock = threading.Lock()

    def interchangeable(self, names: tuple[str, ...]) -> bool:
        prof = self.profile(tuple(names))
        return len(prof.kinds) == 1 and not prof.links

    def plan_for(self, names: tuple[str, ...]) -> Plan:
        """The plan for exactly these devices, on their names; raises InfeasiblePlanError
        (with the reason)."""
        from mcdask.planning.planner import plan

        names = tuple(names)
        prof = self.profile(names)
        key = len(names) if self.interchangeable(names) else names
        with self._lock:
            if key not in self._cache:
                try:
                    self._cache[key] = plan(self.workload, prof, len(names), self.strategy)
                except PlanError as e:
                    self._cache[key] = e
            got = self._cache[key]
        if isinstance(got, PlanError):
            raise got
        return got if got.devices == names else got.renamed(dict(zip(got.devices, names)))

    def prepare(self, sets: list[tuple[str, ...]]) -> threading.Thread:
        """Plan each set in a background thread (the cache fills as it goes)."""
        def work():
            for names in sets:
                try:
                    self.plan_for(names)
                except (PlanError, ProfileError):
                    pass
        t = threading.Thread(target=work, name="mcdask-planbook", daemon=True)
        t.start()
        return t


def _pieces(plan: Plan, device: str) -> set[tuple]:
    return {(plan.stages[si].start, plan.stages[si].end, plan.stages[si].shards[hi].units)
            for si, hi in plan.tasks_of(device)}


def _piece_bytes(workload, piece: tuple) -> int:
    start, end, units = piece
    last = workload.layers[end - 1]
    return (sum(layer.param_bytes for layer in workload.layers[start:end - 1])
            + (last.shard_param_bytes(units[1] - units[0]) if units else last.param_bytes))


def bind_for_reuse(plan: Plan, names: tuple[str, ...], current: Plan | None,
                   current_binding: dict[str, str] | None) -> dict[str, str]:
    """Plan device -> worker name, giving each plan device (heaviest first) the worker that
    already holds the most bytes of its pieces under ``current``; ties go in name order."""
    w = workloads.get(plan.workload)
    held: dict[str, set[tuple]] = {}
    if current is not None and current_binding:
        held = {name: _pieces(current, device) for device, name in current_binding.items()}
    free = list(names)
    weight = {d: sum(_piece_bytes(w, p) for p in _pieces(plan, d)) for d in plan.devices}
    binding = {}
    for device in sorted(plan.devices, key=lambda d: (-weight[d], plan.devices.index(d))):
        want = _pieces(plan, device)
        best = max(free, key=lambda n: (sum(_piece_bytes(w, p) for p in want & held.get(n, set())),
                                        -free.index(n)))
        binding[device] = best
        free.remove(best)
    return {d: binding[d] for d in plan.devices}


# ---------------------------------------------------------------------------------- controller

class Controller:
    """Watches the device set while a stream runs and moves the deployment (see above)."""

    def __init__(self, client, deployment, plans: PlanBook, events: EventLog, *, address: str | None = None):
        self.client, self.plans, self.events = client, plans, events
        self.home = deployment                  # the deployment the stream started with
        self.deployment = deployment
        self.address = address or getattr(client.scheduler, "address", "?")
        self.poll_interval_s = _seconds("poll-interval")
        self.scheduler_timeout_s = _seconds("scheduler-timeout")
        self.wait_for_devices_s = _seconds("wait-for-devices")
        self.membership = Membership(_seconds("heartbeat-timeout"), _seconds("back-after"))
        self._last_poll = 0.0
        self._stuck_since: float | None = None
        self._no_plan_for: tuple[str, ...] | None = None
        self.switches = 0
        usable, _ = self.membership.observe(self._workers())
        self.membership.known |= set(deployment.binding.values())
        n = len(usable)
        self.plans.prepare([tuple(usable[:k]) for k in range(n - 1, 0, -1)] + [tuple(usable)])

    # ---- looking -------------------------------------------------------------------------
    def _workers(self) -> dict[str, dict]:
        if self.client.status != "running":
            raise StreamStopped(f"lost the scheduler at {self.address}: the connection to it closed")
        try:
            info = self.client.sync(_identity_within, self.client, self.scheduler_timeout_s)
        except (TimeoutError, OSError) as e:
            raise StreamStopped(f"lost the scheduler at {self.address}: no answer within "
                                f"{self.scheduler_timeout_s:.0f} s ({type(e).__name__})") from None
        return info["workers"]

    def poll(self, urgent: bool = False) -> DaskRunner | None:
        """A runner for the deployment to move to, or None. Raises StreamStopped."""
        if self.client.status != "running":
            raise StreamStopped(f"lost the scheduler at {self.address}: the connection to it closed")
        now = time.monotonic()
        if now - self._last_poll < (min(0.2, self.poll_interval_s) if urgent else self.poll_interval_s):
            return None
        self._last_poll = now
        usable, changes = self.membership.observe(self._workers())
        for c in changes:
            self.events.emit(c.kind, c.message, device=c.device)
        if set(usable) == set(self.deployment.binding.values()):
            self._stuck_since = None
            return None
        return self._move(usable)

    # ---- moving --------------------------------------------------------------------------
    def _target(self, usable: tuple[str, ...]) -> tuple[Plan, dict[str, str]]:
        """The plan to move to and its binding (plan device -> worker name)."""
        if set(self.home.binding.values()) == set(usable):
            return self.home.plan, dict(self.home.binding)
        plan = self.plans.plan_for(usable)
        if self.plans.interchangeable(usable):
            plan = plan.renamed(bind_for_reuse(plan, usable, self.deployment.plan, self.deployment.binding))
        return plan, {d: d for d in plan.devices}

    def _move(self, usable: tuple[str, ...]) -> DaskRunner | None:
        if not usable:
            self._cannot(usable, "no device is left")
            return None
        try:
            plan, binding = self._target(usable)
        except (PlanError, ProfileError) as e:
            self._cannot(usable, str(e))
            return None
        t0 = time.monotonic()
        old = self.deployment
        try:
            dep = deploy(self.client, plan, old.weights, binding, sync=list(usable), backend=old.backend)
        except DeploymentError as e:
            self.events.emit("no-plan", f"plan {plan.id} for {len(usable)} devices could not be deployed: {e}",
                             plan=plan.id, devices=list(usable))
            return None
        finally:
            self.membership.restart_clock()
        self.deployment, self._stuck_since, self._no_plan_for = dep, None, None
        self.switches += 1
        took = time.monotonic() - t0
        self.events.emit("switched", f"plan {old.plan.id} -> {plan.id} ({plan.strategy}) on {len(usable)} "
                         f"devices: {', '.join(usable)}; deployed in {took:.1f} s",
                         plan=plan.id, previous=old.plan.id, devices=list(usable), deploy_s=round(took, 3),
                         binding=dep.binding, predicted_ips=plan.predicted.get("ips"))
        return DaskRunner(self.client, dep)

    def _cannot(self, usable: tuple[str, ...], reason: str) -> None:
        """No plan for ``usable``: go on with the deployed plan while it can still run (every
        piece has a usable holder), else wait for devices, then stop."""
        if self._no_plan_for != usable:
            self._no_plan_for = usable
            self.events.emit("no-plan", f"no plan fits the {len(usable)} devices left "
                             f"({', '.join(usable) or 'none'}): {reason}", devices=list(usable))
        if _runs_on(self.deployment, usable):
            return None
        now = time.monotonic()
        self._stuck_since = self._stuck_since or now
        if now - self._stuck_since > self.wait_for_devices_s:
            raise StreamStopped(f"no plan fits the {len(usable)} devices left ({', '.join(usable) or 'none'}) and "
                                f"none joined within {self.wait_for_devices_s:.0f} s "
                                f"(mcdask.controller.wait-for-devices): {reason}")
        return None


def _runs_on(deployment, usable: tuple[str, ...]) -> bool:
    """Every piece of the deployed plan has a holder among ``usable``."""
    ok = set(usable)
    for st in deployment.plan.stages:
        for sh in st.shards:
            if not any(deployment.binding[d] in ok for d in sh.devices):
                return False
    return True


async def _identity_within(client, timeout_s: float) -> dict:
    return await asyncio.wait_for(client.scheduler.identity(n_workers=-1), timeout_s)
