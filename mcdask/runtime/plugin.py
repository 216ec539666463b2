"""The worker plugin: keeps this device's slices resident, and the task that runs them.

One plugin, fixed name, idempotent. It holds no plan itself: the current deployment (plan,
device binding, weights source) lives in the scheduler's metadata under
``("mcdask", "deployment")``. In ``setup`` (before a joining or restarted worker takes any
task) and in ``sync`` (when the client switches plans) the plugin reads it, builds the
slices this worker's device holds, drops the ones it no longer needs, and declares one
resource tag per piece it holds. Tasks find slices by id through ``slice_for``.

The deployment names its backend: ``tensorflow`` builds each slice here from its weights
(``slices``); ``litert`` loads the flatbuffer the client put in this device's disk cache
(``litert``, ``flatcache``) and never imports TensorFlow.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

import dask.config
from distributed import get_worker
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from mcdask.errors import SliceNotLoadedError
from mcdask.runtime.quiet import quiet

if TYPE_CHECKING:
    from mcdask.runtime.pieces import SliceShape, SliceSpec

PLUGIN_NAME = "mcdask-slices"
METADATA_KEY = ["mcdask", "deployment"]
logger = logging.getLogger("mcdask.runtime.plugin")

#: slices built in this process, by content key (shared by plugin instances and plan switches)
_BUILT: dict[str, object] = {}


def resource_tag(plan_id: str, stage: int, shard: int) -> str:
    """The resource every holder of (stage, shard) of a plan declares, one slot per device."""
    return f"mcdask-{plan_id}-s{stage}p{shard}"


def slice_id(plan_id: str, stage: int, shard: int) -> str:
    return f"{plan_id}/{stage}/{shard}"


def pieces_for(deployment: dict, worker_name: str) -> dict[str, SliceSpec]:
    """slice id -> SliceSpec of every piece the device bound to ``worker_name`` holds."""
    from mcdask.model.plan import Plan
    from mcdask.runtime.pieces import SliceSpec
    from mcdask.runtime.weights import WeightsSource

    device = {w: d for d, w in deployment["binding"].items()}.get(str(worker_name))
    if device is None:   # not bound, or a release (``mcdask.runtime.deploy.release``: no plan)
        return {}
    plan = Plan.from_dict(deployment["plan"])
    weights = WeightsSource.from_dict(deployment.get("weights"))
    runtime = {"backend": deployment.get("backend", "tensorflow"), "kernels": deployment.get("kernels", "xnnpack")}
    out = {}
    for si, hi in plan.tasks_of(device):
        st = plan.stages[si]
        out[slice_id(plan.id, si, hi)] = SliceSpec(plan.workload, st.start, st.end, st.shards[hi].units, weights,
                                                   **runtime)
    return out


class SliceHost(WorkerPlugin):
    """Builds and keeps this worker's slices. Registered once per cluster."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self):
        self.slices: dict[str, SliceShape] = {}
        self.tags: dict[str, float] = {}
        self.deployment_id: str | None = None
        self.ready = threading.Event()
        self.error: str | None = None
        self._lock: asyncio.Lock | None = None  # made on the worker's event loop

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    async def setup(self, worker):
        self._lock = asyncio.Lock()
        compression = dask.config.get("mcdask.compression", "lz4")
        if compression:
            dask.config.set({"distributed.comm.compression": compression})
        await self.sync(worker)

    async def sync(self, worker) -> dict:
        """Make this worker hold what the scheduler's current deployment says."""
        assert self._lock is not None, "setup() makes the lock on the worker's event loop"
        async with self._lock:
            deployment = await worker.scheduler.get_metadata(keys=METADATA_KEY, default=None)
            if not deployment or (deployment.get("id") == self.deployment_id and not self.error):
                self.ready.set()
                return self.status()
            self.ready.clear()
            if deployment.get("workload"):   # a user's model, shipped with the deployment
                import workloads
                from workloads.spec import Workload

                workloads.register(Workload.from_dict(deployment["workload"]))
            wanted = pieces_for(deployment, worker.name)
            self.slices = {}  # let go of the old plan's slices before building the new ones
            try:
                t0 = time.perf_counter()
                self.slices = await asyncio.to_thread(_build_all, wanted, deployment.get("flatbuffers", {}),
                                                      worker)
                self.error = None
                logger.info("mcdask: %s holds %d slices (%.1f s to build)", worker.name, len(self.slices),
                            time.perf_counter() - t0)
            except Exception as e:  # keep the worker up; tasks will say why they cannot run
                self.slices, self.error = {}, f"{type(e).__name__}: {e}"
                logger.exception("mcdask: building slices failed on %s", worker.name)
            plan_id = deployment.get("plan_id")
            new_tags = {resource_tag(plan_id, *map(int, sid.split("/")[1:])): 1.0 for sid in self.slices}
            stale = [t for t in worker.state.total_resources if t.startswith("mcdask-") and t not in new_tags]
            gone = [t for t in stale if not _tag_in_use(worker, t)]
            for t in gone:   # removed, so the worker table does not list every plan ever held
                worker.state.total_resources.pop(t, None)
                worker.state.available_resources.pop(t, None)
            zeroed = {t: 0.0 for t in stale if t not in gone}   # a task still holds it: removed next switch
            if new_tags or stale:
                await worker.set_resources(**zeroed, **new_tags)
                await _nudge_scheduler(worker, gone)
            self.tags = new_tags
            self.deployment_id = deployment.get("id")
            self.ready.set()
            return self.status()

    def status(self) -> dict:
        from mcdask.runtime.flatcache import statuses

        return {"deployment": self.deployment_id, "slices": sorted(self.slices), "error": self.error,
                "param_bytes": sum(s.param_bytes for s in self.slices.values()),
                "backends": sorted({s.spec.backend for s in self.slices.values()}),
                "kernels": sorted({p.spec.kernels for s in self.slices.values() if s.spec.backend == "litert"
                                   for p in getattr(s, "parts", [s])}), "cache": statuses()}

    def teardown(self, worker):
        self.slices = {}


NUDGE_HANDLER = "mcdask_resources_declared"


class ResourceNudge(SchedulerPlugin):
    """Scheduler side: re-place waiting tasks once a worker declares its tags.

    Dask does not re-examine ``no-worker`` tasks when a worker's resources change
    (dask/distributed#6575). A restarted worker registers before its plugin has declared its
    tags, so tasks for its pieces submitted in that gap would wait forever. The worker plugin
    calls this handler right after declaring tags.
    """

    name = "mcdask-resource-nudge"
    idempotent = True

    async def start(self, scheduler):
        def declared(worker: str, drop: list[str] | None = None) -> str:
            ws = scheduler.workers.get(worker)
            if ws is not None:
                _drop_tags(scheduler, ws, drop or [])
                stimulus = f"mcdask-resources-{time.time()}"
                scheduler.transitions(scheduler.bulk_schedule_unrunnable_after_adding_worker(ws), stimulus)
            return "OK"

        scheduler.handlers[NUDGE_HANDLER] = declared


def _tag_in_use(worker, tag: str) -> bool:
    """Whether a task this worker knows (queued, running, waiting for data) asks for ``tag``."""
    return any(tag in (ts.resource_restrictions or {}) for ts in worker.state.tasks.values())


def _drop_tags(scheduler, ws, tags: list[str]) -> None:
    """Forget resource tags a worker no longer declares (Dask's ``set_resources`` only adds or
    updates). A tag a processing task still holds stays, offering nothing (0) until the next
    switch: releasing that task subtracts from it."""
    held = {r for ts in ws.processing for r in (ts.resource_restrictions or {})}
    for tag in tags:
        if tag in held:
            ws.resources[tag] = 0.0
            scheduler.resources.setdefault(tag, {})[ws.address] = 0.0
            continue
        ws.resources.pop(tag, None)
        ws.used_resources.pop(tag, None)
        holders = scheduler.resources.get(tag)
        if holders is not None:
            holders.pop(ws.address, None)
            if not holders:
                del scheduler.resources[tag]


async def _nudge_scheduler(worker, drop: list[str] | None = None) -> None:
    try:
        handler = getattr(worker.scheduler, NUDGE_HANDLER)
        await (handler(worker=worker.address, drop=drop) if drop else handler(worker=worker.address))
    except Exception as e:  # scheduler without the nudge plugin: tags still work for new tasks
        logger.debug("mcdask: no resource nudge on the scheduler (%s)", e)


def release_memory() -> None:
    """Collect dropped slices and hand the freed heap back to the system (glibc keeps it
    otherwise, and a 1 GB device cannot afford two plans' weights)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def resident_param_bytes() -> int:
    """Weight bytes of the slices this process holds."""
    return sum(getattr(s, "param_bytes", 0) for s in _BUILT.values())


def _build_all(wanted: dict, flatbuffers: dict[str, str] | None = None, worker=None) -> dict:
    """slice id -> built slice of each spec ``wanted``, reusing what this process holds. A
    litert slice loads the flatbuffer whose content key ``flatbuffers`` gives for its slice key
    from ``worker``'s disk cache; TensorFlow is imported only for a tensorflow slice."""
    keep = {spec.key for spec in wanted.values()}
    dropped = [k for k in _BUILT if k not in keep]
    for key in dropped:
        del _BUILT[key]
    if dropped:
        release_memory()
    out = {}
    fast_dense = _room_for_fast_dense(wanted.values(), worker)
    for sid, spec in wanted.items():
        if spec.key not in _BUILT:
            s = _build(spec, flatbuffers or {}, worker, fast_dense)
            s.warm_up()
            _BUILT[spec.key] = s
        out[sid] = _BUILT[spec.key]
    return out


def _room_for_fast_dense(specs, worker) -> bool:
    """litert's ``auto`` kernels: whether this device holds the slices it does not hold yet with
    XNNPACK's second copy of their dense weights (``fast_dense_fits``, on what it holds now and
    what it may use: ``mcdask.profiling.worker.usable_memory``, Dask's pause fraction of its
    limit, its cgroup's limit, its RAM). The plan counted them at mixed's peak, which fits."""
    new = [s for s in specs if s.backend == "litert" and s.kernels == "auto" and s.key not in _BUILT]
    if not new or worker is None:
        return False
    from mcdask.profiling.worker import rss_bytes, usable_memory

    return fast_dense_fits(new, rss_bytes(), usable_memory(worker)["usable_memory_bytes"])


def fast_dense_fits(new: list[SliceSpec], resident_bytes: int, usable_bytes: int) -> bool:
    """Whether ``resident_bytes`` plus the slices ``new`` at XNNPACK's measured load peak
    (``mcdask.model.runtimes``: 2.15x all their weights) fit in ``usable_bytes``."""
    from mcdask.model.runtimes import get
    from mcdask.runtime.pieces import SliceShape

    factor = get("litert-xnnpack").weight_memory_factor
    return resident_bytes + factor * sum(SliceShape(s).param_bytes for s in new) <= usable_bytes


def _build(spec: SliceSpec, flatbuffers: dict[str, str], worker, fast_dense: bool = False):
    if spec.backend == "litert":
        from mcdask.runtime.flatcache import for_worker
        from mcdask.runtime.litert import load

        cache = for_worker(worker)

        def path_of(part: SliceSpec):
            content_key = flatbuffers.get(part.key)
            if content_key is None:
                raise SliceNotLoadedError(f"the deployment names no flatbuffer for {part.key}; deploy it again")
            try:
                return cache.load(content_key)
            except KeyError:
                raise SliceNotLoadedError(f"flatbuffer {content_key} of {part.key} is not in this device's cache "
                                          f"({cache.folder}); deploy again to send it") from None

        return load(spec, path_of, fast_dense)
    quiet()  # this worker's first TensorFlow import may come next
    from mcdask.runtime.slices import Slice, ensure_tf

    try:
        ensure_tf()
    except ImportError as e:  # a device installed for litert only: ensure_tf says what to do
        raise SliceNotLoadedError(str(e)) from None
    return Slice(spec)


async def sync_worker(dask_worker) -> dict:
    """``client.run`` target: bring this worker in line with the current deployment."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return {"deployment": None, "slices": [], "error": "mcdask plugin not registered"}
    return await plugin.sync(dask_worker)


async def rss_after_sync(dask_worker) -> int:
    """``client.run`` target: ``sync_worker`` (a worker without the plugin holds nothing), then
    this worker's resident bytes."""
    import psutil

    if dask_worker.plugins.get(PLUGIN_NAME) is not None:
        await sync_worker(dask_worker)
    return int(psutil.Process().memory_info().rss)


def slice_for(sid: str):
    """The resident slice ``sid`` on the worker running this task."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, SliceHost):
        raise SliceNotLoadedError(f"worker {worker.name} has no {PLUGIN_NAME} plugin; "
                                  "deploy a plan with mcdask.runtime.deploy.deploy first")
    if not plugin.ready.wait(timeout=600):
        raise SliceNotLoadedError(f"worker {worker.name} is still building its slices")
    try:
        return plugin.slices[sid]
    except KeyError:
        why = f" (building failed: {plugin.error})" if plugin.error else ""
        raise SliceNotLoadedError(f"worker {worker.name} does not hold slice {sid}; it holds "
                                  f"{sorted(plugin.slices)}{why}") from None


def run_piece(sid: str, feeds: dict) -> dict:
    """The task: assemble the feeds (merge shards, stack windows) and run the slice."""
    from mcdask.runtime.pieces import assemble

    s = slice_for(sid)
    return s(assemble(s.workload, feeds, s.stacked, s.preprocess))
