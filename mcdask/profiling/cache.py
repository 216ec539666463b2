"""Measured profiles kept on disk (``mcdask.profile.cache-dir``), keyed by the cluster's devices, and
``--plan auto``: the planner's plan on the cached or freshly measured profile."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import dask.config

import workloads
from mcdask.errors import ProfileError
from mcdask.model.profile import Profile
from mcdask.planning.planner import Strategy
from mcdask.profiling import Progress
from mcdask.profiling.assemble import profile_cluster, workers_by_name

#: how pieces are timed (``mcdask.profiling.assemble``): part of the cache key
TIMING_METHOD = "sustained-mean/1"


def cache_dir_default() -> Path:
    return Path(os.path.expanduser(dask.config.get("mcdask.profile.cache-dir", None) or "~/.cache/mcdask"))


def cache_key(client) -> str:
    """Key of the cluster's devices: sorted worker names, their memory limits and thread
    counts, the TensorFlow threads the client's config asks for, the mcdask version and the
    profiler's timing method (a profile timed another way is not reused)."""
    from mcdask import __version__

    devices = [{"name": n, "memory_limit": w.get("memory_limit"), "nthreads": w.get("nthreads")}
               for n, w in sorted(workers_by_name(client).items())]
    doc = {"devices": devices, "intra_op_threads": dask.config.get("mcdask.worker.intra-op-threads", None),
           "mcdask": __version__, "timing": TIMING_METHOD}
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def merge_workloads(base: Profile, extra: Profile) -> Profile:
    """``base`` with the compute of ``extra``'s workloads added; everything else (links, memory,
    task and host overheads, host cores) stays base's."""
    kinds = {}
    for k, v in base.kinds.items():
        e = extra.kinds[k]
        kinds[k] = replace(v, layer_time_s={**v.layer_time_s, **e.layer_time_s},
                           shard_time_s={**v.shard_time_s, **e.shard_time_s},
                           layer_memory_bytes={**v.layer_memory_bytes, **e.layer_memory_bytes},
                           measured={**v.measured, **{f"{x}": y for x, y in e.measured.items()
                                                      if x in ("skipped", "peak_build_bytes")
                                                      and not v.measured.get(x)}})
    measured = dict(base.measured, workloads=sorted(set(base.measured.get("workloads", []))
                                                     | set(extra.measured.get("workloads", []))))
    return replace(base, kinds=kinds, measured=measured)


def cached_profile(client, workload_names: Iterable[str], cache_dir: str | Path | None = None, *,
                   refresh: bool = False, progress: Progress | None = None, **measure) -> Profile:
    """The cluster's profile from the cache, measured (and stored) if absent or ``refresh``;
    workloads missing from a cached profile are measured and merged in."""
    names = [workloads.get(w).name for w in workload_names]
    directory = Path(cache_dir) if cache_dir is not None else cache_dir_default()
    path = directory / f"profile-{cache_key(client)}.json"
    prof = None
    if path.exists() and not refresh:
        try:
            prof = Profile.load(path)
        except ProfileError as e:
            if progress:
                progress(f"ignoring unreadable cached profile {path}: {e}")
    if prof is not None:
        missing = [w for w in names if any(k.covers(workloads.get(w)) for k in prof.kinds.values())]
        if set(prof.device_names) != set(workers_by_name(client)):
            prof = None
        elif missing:
            prof = merge_workloads(prof, profile_cluster(client, missing, progress=progress, **measure))
            prof.save(path)
            return prof
        else:
            return prof
    prof = profile_cluster(client, names, progress=progress, **measure)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    prof.save(tmp)
    tmp.replace(path)
    return prof


def auto_plan(client, workload, cache_dir: str | Path | None = None, *, strategy: Strategy = "optimal",
              progress: Progress | None = None, **measure):
    """The planner's plan for every worker of ``client``'s cluster, on its measured profile
    (cached per set of devices; see ``cached_profile``)."""
    from mcdask.planning.planner import plan
    from mcdask.runtime.deploy import worker_names

    w = workloads.get(workload) if isinstance(workload, str) else workload
    names = worker_names(client)
    if not names:
        raise ProfileError("the cluster has no workers to plan for; start `dask worker ADDRESS` on each device")
    prof = cached_profile(client, [w.name], cache_dir, progress=progress, **measure)
    return plan(w, prof.subset(names), len(names), strategy)
