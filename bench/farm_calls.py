"""What a farm device spends on each task beyond its layers' compute, measured on the farm's
own devices under their quotas, for the bench's ``farm`` profile (``bench.farm_profile.farm_kind``).

* **Dask's own work** (``mcdask.profiling.overhead.measure_message_cost``): CPU seconds per task,
  per dependency, per message fetched and per message served, on three of the devices. Host
  CPU seconds; the farm runs them at its runtime share of a host core.
* **One call of a LiteRT piece** (``call_cost``): a piece that computes next to nothing (AlexNet's
  ``flatten``, on the built-in kernels) called back to back from each device's task thread, as
  ``run_piece`` calls one: the feeds copied in, the hand-off to the model thread under the
  compute quota, the invoke and the exports back. The host split (``bench.farm_profile.measure``)
  times each run of layers as one call on an idle host; what a call costs a device under its
  quotas beyond that goes to each task (measured here, 2026-12-03: 0.6-0.9 ms at Pi speed,
  within the host's own time slowed as the model is, so nothing).
"""

from __future__ import annotations

import functools
import statistics

import workloads

#: the piece whose call is timed: no weights, one reshape
CALL_PROBE = ("alexnet", "flatten")


def time_lite_call(content: bytes, spec, min_s: float, max_s: float) -> dict:
    """On a device (its task thread): the sustained mean seconds per call of the LiteRT slice
    ``spec`` built from flatbuffer bytes ``content``."""
    from mcdask.runtime.litert import LiteSlice
    from mcdask.runtime.timing import sustained_mean

    s = LiteSlice(spec, content=content)
    r = sustained_mean(functools.partial(s, s.example_feeds()), min_calls=5, min_s=min_s, max_s=max_s, warmup=2)
    return {"mean_s": r["mean_s"], "calls": r["calls"]}


def call_cost(client, addresses: list[str], time_scale: float, min_s: float = 2.0, max_s: float = 8.0) -> dict:
    """Seconds of one call of ``CALL_PROBE`` on the devices at ``addresses`` (all at once, the
    median; at Pi speed: x ``time_scale``) and in this process (``host_s``; LiteRT's
    interpreters here run one thread)."""
    from mcdask.runtime.convert import flatbuffer
    from mcdask.runtime.pieces import SliceSpec

    w = workloads.get(CALL_PROBE[0])
    i = [layer.name for layer in w.layers].index(CALL_PROBE[1])
    spec = SliceSpec(w.name, i, i + 1, backend="litert", kernels="builtin")
    content = flatbuffer(spec)
    host = time_lite_call(content, spec, 0.5, 2.0)["mean_s"]
    futures = [client.submit(time_lite_call, content, spec, min_s / time_scale, max_s / time_scale, workers=[a],
                             pure=False, allow_other_workers=False) for a in addresses]
    times = [f.result()["mean_s"] * time_scale for f in futures]
    return {"device_s": statistics.median(times), "host_s": host, "devices": len(times),
            "spread": (max(times) - min(times)) / statistics.median(times), "piece": "/".join(CALL_PROBE)}


def farm_costs(client, addresses: list[str], time_scale: float, backend: str, log=print) -> dict:
    """``{"dask": measure_message_cost(...), "call": call_cost(...) or None}`` on the farm's
    devices at ``addresses`` (at least two); the call on litert only (TensorFlow's pieces are
    timed on the devices by the ``device`` profile)."""
    from mcdask.profiling.overhead import measure_message_cost

    log("Dask's own CPU per task, dependency and message on the farm's workers...")
    dask = measure_message_cost(client, addresses[0], addresses[1:3])
    log("  " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in dask.items() if k.endswith("_s")) + " (host CPU)")
    call = None
    if backend == "litert":
        call = call_cost(client, addresses, time_scale)
        log(f"  one call of a LiteRT piece: {call['device_s'] * 1e3:.1f} ms at Pi speed on the devices "
            f"(spread {call['spread']:.0%}), {call['host_s'] * 1e3:.3f} ms on this host")
    return {"dask": dask, "call": call}
