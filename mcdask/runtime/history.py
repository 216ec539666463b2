"""How much low-level history Dask keeps while frames stream: ``mcdask.history-length``.

Dask keeps its last ``distributed.admin.low-level-log-length`` (default 1000) messages on
every batched connection, scheduler transitions and events per topic, for debugging. A
message that submits a frame's first stage carries the frame (145 KB for AlexNet), so 1000 of
them held about 120 MB in a streaming client and 250 MB in the scheduler (``mcdask bench
--soak``). ``HistoryBound``, registered on the scheduler at deploy, brings the scheduler's
logs down to ``mcdask.history-length`` (and keeps Dask's ``key_split`` memo from holding every
finished key: ``trim_key_cache``, and each span's metadata from holding one entry per task
submitted: ``trim_spans``), ``WorkerHistoryBound`` each device's (the same
setting also bounds a worker's profile history: one call tree a second, 1000 s of them by
default, which grew each worker by 50 KB a second), and ``client_config`` does it for a client
created under it. Null leaves Dask's own length.
"""

from __future__ import annotations

from collections import deque
from functools import partial

import dask.config
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from mcdask.errors import McdaskError
from mcdask.runtime.malloc import trim_freed_memory

DASK_KEY = "distributed.admin.low-level-log-length"


def history_length() -> int | None:
    """``mcdask.history-length``: None (Dask's own) or a count of at least 1."""
    value = dask.config.get("mcdask.history-length", None)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise McdaskError(f"mcdask.history-length is {value!r}; expected a whole number of at least 1, or null")
    return value


def client_config() -> dict:
    """Dask settings for a client (``dask.config.set`` around its creation)."""
    n = history_length()
    return {} if n is None else {DASK_KEY: n}


def bounded(log: deque, n: int) -> deque:
    """``log`` holding at most its last ``n`` entries from now on (itself if it already does)."""
    if log.maxlen is not None and log.maxlen <= n:
        return log
    return deque(log, maxlen=n)


#: Dask memoises ``key_split`` for up to 100,000 keys; a stream's keys are unique per frame, so
#: the cache holds every finished task's key (about 0.6 KB each with its deserialised tuple)
#: until it is full: the scheduler grew 0.7 KB a frame over a 20,000-frame soak. Cleared when
#: it holds more than this many (checked every ``KEY_CACHE_CHECK_MS``).
KEY_CACHE_MAX = 1_000
KEY_CACHE_CHECK_MS = 5_000


def trim_key_cache(limit: int = KEY_CACHE_MAX) -> bool:
    """Clear ``dask.utils.key_split``'s memo if it holds more than ``limit`` keys (a pure
    function's cache: clearing it only costs recomputing a few splits). True if cleared."""
    from dask.utils import key_split

    if key_split.cache_info().currsize > limit:
        key_split.cache_clear()
        return True
    return False


def trim_spans(scheduler, n: int) -> int:
    """Keep the last ``n`` entries of each span's ``collections`` metadata; returns how many
    were dropped. ``Client.submit`` adds ``{"type": "Future"}`` to its span's metadata for
    every task (dask/distributed#8612), so a stream's span gained one dict per task: 0.17 KB a
    frame of the scheduler's remaining growth over a soak (tracemalloc). The entries only say
    what kind of collection a span computed; the last ``n`` say it as well as all of them."""
    ext = scheduler.extensions.get("spans")
    dropped = 0
    for sp in getattr(ext, "spans", {}).values():
        collections = (getattr(sp, "_metadata", None) or {}).get("collections")
        if isinstance(collections, list) and len(collections) > n:
            dropped += len(collections) - n
            del collections[:-n]
    return dropped


def _trim_periodically(server, name: str, also=None) -> None:
    """Start a periodic ``trim_key_cache`` (and ``also()``) on a running scheduler or worker (once)."""
    from tornado.ioloop import PeriodicCallback

    def trim() -> None:
        trim_key_cache()
        if also is not None:
            also()

    if name not in server.periodic_callbacks:
        pc = PeriodicCallback(trim, KEY_CACHE_CHECK_MS)
        server.periodic_callbacks[name] = pc
        pc.start()


class HistoryBound(SchedulerPlugin):
    """Scheduler side: the logs that exist are cut to ``length`` entries, and Dask's setting is
    lowered in the scheduler process so that connections and topics opened later keep no more."""

    name = "mcdask-history"
    idempotent = True

    def __init__(self, length: int):
        self.length = length

    async def start(self, scheduler) -> None:
        n = self.length
        dask.config.set({DASK_KEY: n})
        trim_freed_memory()   # a stock scheduler has no nanny to set it
        _trim_periodically(scheduler, "mcdask-key-cache", partial(trim_spans, scheduler, n))
        scheduler.transition_log = bounded(scheduler.transition_log, n)
        for comm in [*scheduler.stream_comms.values(), *scheduler.client_comms.values()]:
            if hasattr(comm, "recent_message_log"):
                comm.recent_message_log = bounded(comm.recent_message_log, n)
        broker = getattr(scheduler, "_broker", None)
        if broker is not None:
            from distributed.broker import Topic

            broker._topics.default_factory = partial(Topic, maxlen=n)
            for topic in broker._topics.values():
                topic.events = bounded(topic.events, n)


class WorkerHistoryBound(WorkerPlugin):
    """Worker side: its logs, transfer logs and profile history cut to ``length`` entries, and
    Dask's setting lowered in the worker process for the connections it opens later."""

    name = "mcdask-worker-history"
    idempotent = True

    def __init__(self, length: int):
        self.length = length

    def setup(self, worker) -> None:
        n = self.length
        dask.config.set({DASK_KEY: n})
        trim_freed_memory()   # as Dask's nanny does for the workers it starts
        _trim_periodically(worker, "mcdask-key-cache")
        for owner, attrs in ((worker, ("profile_history", "profile_keys_history", "transfer_incoming_log",
                                       "transfer_outgoing_log")),
                             (worker.state, ("log", "stimulus_log")),
                             (getattr(worker, "batched_stream", None), ("recent_message_log",))):
            for attr in attrs:
                if isinstance(getattr(owner, attr, None), deque):
                    setattr(owner, attr, bounded(getattr(owner, attr), n))


def register(client) -> None:
    """Register ``HistoryBound`` on the client's scheduler and ``WorkerHistoryBound`` on its
    workers, present and future (nothing when the length is null)."""
    n = history_length()
    if n is not None:
        client.register_plugin(HistoryBound(n))
        client.register_plugin(WorkerHistoryBound(n))
