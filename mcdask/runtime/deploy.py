"""Deploy a plan on a Dask cluster and run its pieces there.

``deploy`` binds the plan's devices to workers (by name, else in name order), publishes the
deployment in the scheduler's metadata, registers the ``SliceHost`` plugin (idempotent) and
brings every worker in line (on a ``tls://`` scheduler, only workers whose certificate
names them: ``mcdask.security.gate``); calling it again with another plan switches plans without
restarting the client or the workers. The deployment names its backend (``tensorflow``, or
``litert``: the client converts the slices and ships each device the flatbuffers its disk cache
lacks before the devices load them, ``mcdask.runtime.convert``). ``DaskRunner`` submits one task
per piece, restricted by the piece's resource tag, prioritised by frame, with a key naming
stage and frame.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, replace

import dask.config
import dask.utils

import workloads
from mcdask.errors import DeploymentError
from mcdask.model import runtimes
from mcdask.model.plan import Plan, stage_label
from mcdask.runtime import history
from mcdask.runtime.pieces import BACKENDS, KERNELS
from mcdask.runtime.plugin import (
    METADATA_KEY,
    ResourceNudge,
    SliceHost,
    pieces_for,
    resource_tag,
    run_piece,
    slice_id,
    sync_worker,
)
from mcdask.runtime.weights import WeightsSource, preprocessing
from mcdask.security.gate import guard


@dataclass(frozen=True)
class Deployment:
    plan: Plan
    binding: dict[str, str]          # plan device -> worker name
    weights: WeightsSource
    id: str
    backend: str = "tensorflow"
    #: flatbuffer bytes the client sent to devices for this deployment (litert; 0: all were cached)
    shipped_bytes: int = 0


def backend_of(backend: str | None = None) -> tuple[str, str]:
    """(backend, litert kernels): ``backend`` or ``mcdask.worker.backend``, and
    ``mcdask.worker.litert-kernels``, checked."""
    backend = backend or dask.config.get("mcdask.worker.backend")
    kernels = dask.config.get("mcdask.worker.litert-kernels", None) or runtimes.LITERT_KERNELS
    if backend not in BACKENDS:
        raise DeploymentError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)} (mcdask.worker.backend)")
    if kernels not in KERNELS:
        raise DeploymentError(f"litert kernels {kernels!r}: choose one of {', '.join(KERNELS)} "
                              "(mcdask.worker.litert-kernels)")
    return backend, kernels


def natural_key(name: str) -> list:
    """Sort key that puts pi3-2 before pi3-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def worker_addresses(client) -> dict[str, str]:
    """Worker name -> address of every registered worker."""
    info = client.scheduler_info(n_workers=-1)
    return {str(w.get("name", a)): a for a, w in info["workers"].items()}


def worker_names(client) -> list[str]:
    return sorted(worker_addresses(client), key=natural_key)


def bind(plan: Plan, names: list[str]) -> dict[str, str]:
    """Plan device -> worker name: same names where they all exist, else in order."""
    if all(d in names for d in plan.devices):
        return {d: d for d in plan.devices}
    if len(names) < len(plan.devices):
        raise DeploymentError(f"plan needs {len(plan.devices)} devices, the cluster has {len(names)} "
                              f"workers ({', '.join(names) or 'none'}); plan for {len(names)} devices instead")
    return dict(zip(plan.devices, names))


def deploy(client, plan: Plan, weights: WeightsSource = WeightsSource(),
           binding: dict[str, str] | None = None, *, sync: list[str] | None = None,
           timeout_s: float | None = None, backend: str | None = None) -> Deployment:
    """Make the cluster hold ``plan``'s slices; returns when every bound worker is ready.

    The workers named in ``sync`` (default: every registered one) are brought in line: the
    bound ones build their pieces, the others let go of what they held. A controller leaves a
    frozen device out of ``sync``, since it cannot answer. Workers get ``timeout_s``
    (``mcdask.controller.deploy-timeout``) to build. ``backend``: ``tensorflow`` or ``litert``,
    default ``mcdask.worker.backend`` (read now: a controller's switches keep the command's)."""
    w = workloads.get(plan.workload)
    backend, kernels = backend_of(backend)
    plan.validate(w)
    weights = weights.check()   # an absolute path, checked here once
    guard(client)   # on a TLS scheduler: only workers whose certificate names them (mcdask.security.gate)
    addresses = worker_addresses(client)
    binding = binding or bind(plan, sorted(addresses, key=natural_key))
    runtime = [backend, kernels] if backend != "tensorflow" else []
    digest = hashlib.sha1(json.dumps([plan.id, weights.to_dict(), binding, *runtime], sort_keys=True).encode())
    dep_id = digest.hexdigest()[:12]
    doc = {"id": dep_id, "plan_id": plan.id, "plan": plan.to_dict(), "binding": binding,
           "weights": weights.to_dict(), "backend": backend, "kernels": kernels}
    if not workloads.builtin(w.name):   # a user's model: the devices learn it from the deployment
        doc["workload"] = w.to_dict()
    gone = sorted(n for n in binding.values() if n not in addresses)
    if gone:
        raise DeploymentError(f"deployment failed: workers {gone} are not registered")
    shipped = _ship_flatbuffers(client, doc, w, weights, addresses) if backend == "litert" else 0
    client.set_metadata(METADATA_KEY, doc)
    client.register_plugin(ResourceNudge())
    client.register_plugin(SliceHost())
    history.register(client)   # the scheduler keeps a bounded history of what it sent
    _show_on_dashboard(client)
    timeout_s = timeout_s or dask.utils.parse_timedelta(dask.config.get("mcdask.controller.deploy-timeout", "120s"))
    targets = sorted({addresses[n] for n in [*binding.values(), *(addresses if sync is None else sync)]
                      if n in addresses})
    try:
        statuses = client.sync(run_within, client, sync_worker, targets, timeout_s)
    except TimeoutError:
        raise DeploymentError(f"deployment failed: workers {sorted(binding.values())} did not all finish building "
                              f"their slices within {timeout_s:.0f} s (mcdask.controller.deploy-timeout)") from None
    problems = []
    for device, name in binding.items():
        st = statuses.get(addresses[name])
        if st is None or isinstance(st, Exception):
            problems.append(f"{device}: worker {name!r} did not answer ({st!r})")
            continue
        want = sorted(pieces_for(doc, name))
        if st.get("error") or st.get("deployment") != dep_id or st.get("slices") != want:
            problems.append(f"{device} on {name}: {st.get('error') or 'holds ' + str(st.get('slices'))}")
    if problems:
        raise DeploymentError("deployment failed: " + "; ".join(problems))
    return Deployment(plan, binding, weights, dep_id, backend, shipped)


def release(client, timeout_s: float | None = None) -> dict[str, int]:
    """Every worker lets go of its slices, its resource tags and the heap they took: the
    scheduler's deployment becomes one of no plan. Returns each answering worker's resident
    bytes after (worker name -> bytes); raises ``DeploymentError`` naming the workers that did
    not answer within ``timeout_s`` (``mcdask.controller.deploy-timeout``). ``deploy`` after it
    builds from nothing, so what a device then peaks at is that plan's own."""
    from mcdask.runtime.plugin import rss_after_sync

    timeout_s = timeout_s or dask.utils.parse_timedelta(dask.config.get("mcdask.controller.deploy-timeout", "120s"))
    client.set_metadata(METADATA_KEY, {"id": f"released-{uuid.uuid4().hex[:8]}", "plan_id": None, "plan": None,
                                       "binding": {}})
    addresses = worker_addresses(client)
    try:
        answers = client.sync(run_within, client, rss_after_sync, sorted(addresses.values()), timeout_s)
    except TimeoutError:
        raise DeploymentError(f"release: workers {sorted(addresses)} did not all let go of their slices within "
                              f"{timeout_s:.0f} s (mcdask.controller.deploy-timeout)") from None
    by_address = {a: n for n, a in addresses.items()}
    silent = sorted(by_address[a] for a, r in answers.items() if not isinstance(r, int))
    if silent:
        raise DeploymentError(f"release: workers {silent} did not answer ({answers})")
    return {by_address[a]: r for a, r in answers.items()}


def _ship_flatbuffers(client, doc: dict, workload, weights: WeightsSource, addresses: dict[str, str]) -> int:
    """litert: fix the preprocessing in the deployment (a device needs no weights file), name
    each slice's flatbuffer, and put the ones a device lacks in its cache; returns bytes sent."""
    from mcdask.runtime.convert import keys_of, ship

    doc["weights"] = replace(weights, preprocess=preprocessing(workload, weights)).to_dict()
    wanted = {name: list(pieces_for(doc, name).values()) for name in doc["binding"].values()}
    doc["flatbuffers"] = keys_of(s for specs in wanted.values() for s in specs)
    return ship(client, wanted, addresses)


def _show_on_dashboard(client) -> None:
    """Register the dashboard's scheduler plugin (``/mcdask``, ``/metrics`` series). Imported
    here, lazily, as the one way up from runtime to the dashboard room; optional: a scheduler
    that cannot take it still runs the plan."""
    try:
        from mcdask.dashboard.plugin import SwarmDashboard
        from mcdask.dashboard.publish import enabled

        if enabled():
            client.register_plugin(SwarmDashboard())
    except Exception as e:
        logging.getLogger("mcdask.runtime.deploy").debug("mcdask: no dashboard on the scheduler (%s)", e)


async def run_within(client, function, workers: list[str], timeout_s: float) -> dict:
    """``function`` on ``workers`` (an exception is returned, not raised), within ``timeout_s``."""
    return await asyncio.wait_for(client._run(function, workers=workers, on_error="return"), timeout_s)


async def _gather_within(client, futures: list, timeout_s: float) -> list:
    return await asyncio.wait_for(client._gather(futures), timeout_s)


class DaskRunner:
    """Submits plan pieces as Dask tasks (see ``mcdask.streaming.stream.Stream``)."""

    def __init__(self, client, deployment: Deployment, retries: int | None = None):
        self.client = client
        self.deployment = deployment
        self.plan = deployment.plan
        self.workload = workloads.get(self.plan.workload)
        self.token = uuid.uuid4().hex[:6]
        self.retries = dask.config.get("mcdask.stream.retries", 1) if retries is None else retries
        pid = self.plan.id
        self._pieces = {(si, hi): (slice_id(pid, si, hi), {resource_tag(pid, si, hi): 1},
                                   stage_label(self.workload, st, hi))
                        for si, st in enumerate(self.plan.stages) for hi in range(len(st.shards))}

    def submit(self, stage: int, shard: int, frame: int, feeds: dict):
        sid, resources, label = self._pieces[stage, shard]
        return self.client.submit(run_piece, sid, feeds, key=(label, self.token, frame),
                                  resources=resources, priority=-frame, pure=False, retries=self.retries)

    def gather(self, futures: list, timeout_s: float | None = None) -> list:
        """The futures' results; ``TimeoutError`` after ``timeout_s``
        (``mcdask.stream.gather-timeout``): their data may have gone with a lost device."""
        timeout_s = timeout_s or dask.utils.parse_timedelta(dask.config.get("mcdask.stream.gather-timeout", "3s"))
        try:
            return self.client.sync(_gather_within, self.client, futures, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"no result within {timeout_s:.0f} s") from None

    def cancel(self, futures: list) -> None:
        """Stop the scheduler running these tasks (a frame moved to another plan or answered)."""
        if futures:
            self.client.cancel(futures)

    def why_stalled(self) -> str | None:
        """Why tasks may not be running (asked when a frame goes unanswered): the workers Dask paused."""
        return paused_workers(self.client)


#: seconds the scheduler gets to say which workers are paused
ASK_TIMEOUT_S = 5.0


def paused_workers(client) -> str | None:
    """One line naming the workers Dask has paused, with their memory, or None. Dask pauses a
    worker whose resident memory passes ``distributed.worker.memory.pause`` of its limit and
    starts no task there until it drops: a plan whose slices leave a device there stalls."""
    pause = dask.config.get("distributed.worker.memory.pause", 0.8)
    try:   # a diagnosis, asked while a frame waits: a scheduler that does not answer soon gives none
        info = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=ASK_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None
    paused = []
    for a, w in sorted(info["workers"].items()):
        if w.get("status") == "paused":
            rss, limit = (w.get("metrics") or {}).get("memory"), w.get("memory_limit")
            held = f" ({rss / 1e6:,.0f} MB resident of a {limit / 1e6:,.0f} MB limit)" if rss and limit else ""
            paused.append(f"{w.get('name', a)}{held}")
    if not paused:
        return None
    return (f"Dask has paused {', '.join(paused)}: a worker above {pause:.0%} of its memory limit starts no task; "
            "give the devices more memory (--memory-limit) or plan for what they have (leave out --plan)")
