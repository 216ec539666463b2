"""Whether a plan fits the memory of the devices it is about to run on, before it is deployed.

The live cluster says what each device has: the smallest of its Dask memory limit times Dask's
pause fraction, its cgroup limit and its RAM (``mcdask.profiling.worker.usable_memory``, run on
every worker), and what its runtime takes before any slice. Where Dask pauses a worker (a memory
limit with a pause fraction), it pauses it on its whole resident size, shared-library pages
included, and how many of those a process maps moves with the page cache; so such a worker loads
the device runtime and measures itself (``runtime_baseline_bytes``), and the plan counts that
where it is more than the runtime's recorded figure. A worker without Dask's pause (the farm's,
the device recipe's) is bound by its cgroup or its RAM, where the kernel drops clean library
pages before it runs out: the recorded figure, measured after dropping the page cache, stands.
The cost model says what each plan device needs: that baseline, every piece at its build peak,
and one frame of activations (``mcdask.planning.costmodel``). A plan
that needs more than a device has is refused, naming the device and both numbers, before any
slice is sent: a device that runs out of memory is killed, and with it every frame it held.
"""

from __future__ import annotations

import asyncio
import functools

from mcdask.errors import DeploymentError, PlanError
from mcdask.model.plan import Plan
from mcdask.profiling.worker import runtime_baseline_bytes, usable_memory

#: seconds every worker gets to say how much memory it has
ASK_TIMEOUT_S = 30.0
#: seconds every worker gets to load its runtime and measure itself (TensorFlow's import takes
#: 3 s on this host, about 40 s at a Pi 3's speed)
BASELINE_TIMEOUT_S = 180.0


def for_live_devices(client, workload, profile: str | None, runtime: str):
    """(plan book, worker name -> usable bytes): the planner's plans for the workers there are,
    each of the smallest one's memory and the largest measured runtime baseline."""
    from mcdask.streaming.controller import plan_book

    memory, baseline = live_devices(client, runtime)
    return plan_book(workload, profile, min(memory.values()), runtime, baseline), memory


def live_memory(client, timeout_s: float = ASK_TIMEOUT_S) -> dict[str, int]:
    """Worker name -> the bytes it may use (module docstring)."""
    return live_devices(client, None, timeout_s)[0]


def live_baseline(client, runtime: str, timeout_s: float = BASELINE_TIMEOUT_S) -> int:
    """The largest runtime baseline of the workers Dask pauses on their resident size, each
    measured with ``runtime`` loaded (module docstring); 0 if there is none."""
    return live_devices(client, runtime, timeout_s)[1]


def live_devices(client, runtime: str | None, timeout_s: float | None = None) -> tuple[dict[str, int], int]:
    """(worker name -> the bytes it may use, the largest measured runtime baseline or 0), in one
    ask of every worker; with ``runtime``, each worker Dask may pause loads it and measures itself."""
    from mcdask.runtime.deploy import run_within, worker_addresses

    names = {a: n for n, a in worker_addresses(client).items()}
    if not names:
        return {}, 0
    timeout_s = timeout_s or (BASELINE_TIMEOUT_S if runtime else ASK_TIMEOUT_S)
    what = f"how much memory they have with the {runtime} runtime loaded" if runtime else "how much memory they have"
    try:
        got = client.sync(run_within, client, functools.partial(_facts, runtime), list(names), timeout_s)
    except TimeoutError:
        raise DeploymentError(f"workers {sorted(names.values())} did not all say {what} within {timeout_s:.0f} s") \
            from None
    bad = {names[a]: v for a, v in got.items() if not isinstance(v, tuple)}
    if bad:
        raise DeploymentError(f"workers {sorted(bad)} did not say {what}: "
                              + "; ".join(f"{n}: {v}" for n, v in sorted(bad.items())))
    baselines = [b for _, b in got.values() if b is not None]
    return {names[a]: usable for a, (usable, _) in got.items()}, max(baselines, default=0)


async def _facts(runtime: str | None, dask_worker) -> tuple[int, int | None]:
    facts = usable_memory(dask_worker)
    usable = int(facts["usable_memory_bytes"])
    if runtime is None or not (facts["memory_limit_bytes"] and facts["pause_fraction"]):
        return usable, None
    # off the worker's event loop: loading TensorFlow takes seconds, and the worker keeps talking meanwhile
    return usable, await asyncio.to_thread(runtime_baseline_bytes, runtime)


def shortfalls(workload, plan: Plan, profile, binding: dict[str, str], memory: dict[str, int]) -> list[str]:
    """One line per plan device whose predicted need exceeds what its worker has."""
    from mcdask.planning.costmodel import evaluate

    need = evaluate(workload, plan, profile).memory_bytes
    out = []
    for device, worker in binding.items():
        have = memory.get(worker)
        if have is not None and need.get(device, 0) > have:
            kind = profile.kind_of(device)
            on = device if device == worker else f"{device} (worker {worker})"
            out.append(f"{on} needs {need[device] / 1e6:,.0f} MB ({kind.baseline_bytes / 1e6:,.0f} MB runtime "
                       f"baseline + {(need[device] - kind.baseline_bytes) / 1e6:,.0f} MB of slices at their build "
                       f"peak) and has {have / 1e6:,.0f} MB")
    return out


def check_fits(workload, plan: Plan, profile, binding: dict[str, str], memory: dict[str, int]) -> None:
    """Raise PlanError naming every device ``plan`` would run out of memory on."""
    short = shortfalls(workload, plan, profile, binding, memory)
    if short:
        raise PlanError(f"plan {plan.id} does not fit the devices' memory: {'; '.join(short)}. Plan for the "
                        "workers there are (leave out --plan), use more devices, or measure them with "
                        "`mcdask profile` (README: Device memory)")
