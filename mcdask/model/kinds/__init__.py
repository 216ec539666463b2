"""Built-in device kinds, each derived from published numbers (sources inside each module).

``get(kind)`` returns a :class:`mcdask.model.profile.DeviceKind`; ``link_for(kind)`` the link model
the kind was measured with; ``homogeneous(kind, n)`` a profile of n such devices; ``python -m
mcdask.model.kinds pi3`` prints a kind as JSON. (The kinds build on ``mcdask.model.profile``,
which imports nothing from here.)

* ``pi3``: Raspberry Pi 3 running TensorFlow 1.5 / Keras 2.1, the paper's farm (default).
* ``tx2-cpu``: Jetson TX2, CPU only, from the published whole-model times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import cache

from mcdask.errors import ProfileError
from mcdask.model.kinds import pi3 as _pi3
from mcdask.model.kinds import tx2 as _tx2
from mcdask.model.profile import Device, DeviceKind, LinkModel, Profile

_BUILDERS = {"pi3": _pi3.pi3, "tx2-cpu": _tx2.tx2_cpu}
KINDS = tuple(_BUILDERS)


@cache
def get(kind: str) -> DeviceKind:
    try:
        return _BUILDERS[kind]()
    except KeyError:
        raise ProfileError(f"unknown device kind {kind!r}; built in: {', '.join(KINDS)}; "
                           f"or pass a profile JSON file") from None


def link_for(kind: str) -> LinkModel:
    """The link model of the network the kind was measured on (all built-ins: the paper's Wi-Fi)."""
    get(kind)
    return _pi3.WIFI


__all__ = ["KINDS", "get", "link_for"]


def device_names(kind: str, n: int, prefix: str | None = None) -> tuple[str, ...]:
    """Default names ``<prefix>-00 .. <prefix>-<n-1>`` (prefix defaults to the kind)."""
    return tuple(f"{prefix or kind}-{i:02d}" for i in range(n))


def homogeneous(kind: DeviceKind | str, n: int | None = None, *, names: Iterable[str] | None = None,
                link: LinkModel | None = None, baseline_bytes: int | None = None,
                memory_bytes: int | None = None, runtime: str | None = None) -> Profile:
    """A profile of ``n`` identical devices of ``kind`` (a DeviceKind or a built-in kind name).

    ``names`` overrides the device names (then ``n`` may be omitted). ``link`` defaults to the
    built-in kind's link model. ``runtime`` (``mcdask.model.runtimes``) gives the kind that
    runtime's baseline and weight memory; ``baseline_bytes`` / ``memory_bytes`` override the kind's.
    """
    if isinstance(kind, str):
        spec = get(kind)
        link = link or link_for(kind)
    else:
        spec = kind
        if link is None:
            raise ProfileError(f"homogeneous({kind.kind!r}): give link= for a kind that is not built in")
    if runtime is not None:
        from mcdask.model.runtimes import on

        spec = on(spec, runtime)
    if baseline_bytes is not None:
        spec = replace(spec, baseline_bytes=baseline_bytes)
    if memory_bytes is not None:
        spec = replace(spec, memory_bytes=memory_bytes)
    names = tuple(names) if names is not None else None
    if names is None:
        if n is None or n < 1:
            raise ProfileError(f"homogeneous({spec.kind!r}): need n >= 1 devices or names; got n={n!r}")
        names = device_names(spec.kind, n)
    elif n is not None and n != len(names):
        raise ProfileError(f"homogeneous({spec.kind!r}): n={n} but {len(names)} names given")
    return Profile({spec.kind: spec}, tuple(Device(x, spec.kind) for x in names), link,
                   name=f"{len(names)} x {spec.kind}")


#: the workload whose per-layer times set the rate for estimating other models
RATE_WORKLOAD = "alexnet"


def covering(kind: DeviceKind, workload) -> DeviceKind:
    """``kind`` with estimated times for the layers of ``workload`` it has none for (a user's
    model): dense layers by the kind's memory-bound dense model where it has one, every other
    layer in proportion to its FLOPs at the rate the kind runs AlexNet's non-dense layers.
    Estimates, said so in ``sources``; ``mcdask profile`` measures the real ones."""
    missing = set(kind.covers(workload))
    if not missing:
        return kind
    import workloads

    ref = workloads.get(RATE_WORKLOAD)
    if kind.covers(ref):
        raise ProfileError(f"kind {kind.kind!r} has no times for {workload.name} and none for {RATE_WORKLOAD} "
                           "to estimate them from; profile the devices (mcdask profile)")
    rest = [layer for layer in ref.layers if layer.kind != "dense"]
    per_flop = sum(kind.time_s(ref.name, layer) for layer in rest) / sum(layer.flops for layer in rest)
    times = dict(kind.layer_time_s.get(workload.name, {}))
    for layer in workload.layers:
        if layer.name not in missing:
            continue
        if layer.kind == "dense" and kind.dense_fixed_s is not None and kind.dense_s_per_weight_byte is not None:
            times[layer.name] = kind.dense_fixed_s + kind.dense_s_per_weight_byte * layer.param_bytes
        else:
            times[layer.name] = per_flop * max(layer.flops, 1)
    how = (f"estimated: dense layers by the dense model, the others at {per_flop:.3g} s/FLOP "
           f"({kind.kind}'s {RATE_WORKLOAD} non-dense rate)")
    return replace(kind, layer_time_s={**kind.layer_time_s, workload.name: times},
                   sources={**kind.sources, f"{workload.name} layer times": how})
