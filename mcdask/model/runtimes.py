"""The software a device runs, as the planner counts its memory. Plain data; no TensorFlow, no Dask.

A device kind (``mcdask.model.kinds``) says what the hardware is: its compute times, memory and
link. A *runtime* says what the software on it takes: the resident memory of a device process
before any slice is loaded (``baseline_bytes``), and the bytes a piece costs per byte of its
weights at the worst moment of building or loading it (``weight_memory_factor``: the plan's
memory counts every piece at that peak, so no moment of a deployment exceeds what the plan
says). ``on(kind, runtime)`` gives a kind those figures.

* ``tensorflow``: TensorFlow 2.21 + Keras 3 + Dask, the ``--backend tensorflow`` device.
* ``litert-auto``, ``litert-mixed``, ``litert-xnnpack``, ``litert-builtin``: ``ai-edge-litert``
  + Dask without TensorFlow, the ``--backend litert`` device, on the kernels
  ``mcdask.worker.litert-kernels`` names: ``mixed`` (dense layers on LiteRT's built-in kernels,
  which read the weights where they lie; the rest on XNNPACK), ``xnnpack`` (faster, with a
  second, repacked copy of every weight), ``builtin``, or ``auto`` (the default: mixed, and
  XNNPACK for the dense layers too on a device with room for their copy; counted as mixed).
  ``litert`` alone means the default, ``litert-auto``.
* ``tf1.5``: the paper's TensorFlow 1.5 / Keras 2.1 Pis (RA-L Fig. 10, ``mcdask.model.kinds.pi3``);
  for planning what the paper planned. No device of ours runs it.

Each figure's source is in its ``source``; ``python -m bench.backends`` measures the deployable
ones again on this machine (``bench/results/backends.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mcdask.errors import ProfileError
from mcdask.model.kinds import pi3 as _pi3
from mcdask.model.profile import DeviceKind

#: the runtime a device runs unless a deployment says otherwise (``mcdask.worker.backend``)
DEFAULT = "litert"
#: litert's kernels unless a deployment says otherwise (``mcdask.worker.litert-kernels``)
LITERT_KERNELS = "auto"


@dataclass(frozen=True)
class Runtime:
    name: str
    baseline_bytes: int
    weight_memory_factor: float
    #: the factor of dense layers, where they load otherwise (None: ``weight_memory_factor``)
    dense_weight_memory_factor: float | None
    #: whether ``mcdask run --backend`` can put it on devices
    deployable: bool
    source: str


RUNTIMES = {
    "tensorflow": Runtime(
        "tensorflow", 602_400_000, 1.2, None, True,
        "measured here (2 x86-64 cores, Python 3.11, TensorFlow 2.21, Dask 2026.8; python -m bench.backends after "
        "dropping the page cache, bench/results/backends.json, medians of 3 fresh processes): a device process with "
        "TensorFlow and a tiny model, 602.4 MB resident; building a slice and running it once peaks at 1.04x (the "
        "action model) to 1.14x (all of AlexNet) its weight bytes, 1.08x for half of VGG16's fc1, its variables "
        "adopting the buffers the weights were read into (mcdask.runtime.slices)"),
    "litert-xnnpack": Runtime(
        "litert-xnnpack", 80_100_000, 2.15, None, True,
        "measured here (ai-edge-litert 2.3, Dask 2026.8; python -m bench.backends): a device process with the "
        "LiteRT interpreter and no TensorFlow, 80.1 MB resident; loading a slice's flatbuffer with XNNPACK, "
        "which repacks the weights into a second copy, peaks at 2.03-2.11x its weight bytes"),
    "litert-builtin": Runtime(
        "litert-builtin", 80_400_000, 1.15, None, True,
        "as litert-xnnpack, with LiteRT's built-in kernels (mcdask.worker.litert-kernels: builtin), which read the "
        "weights where they lie: 80.4 MB resident, loading peaks at 1.02-1.11x the weight bytes"),
    "litert-mixed": Runtime(
        "litert-mixed", 80_400_000, 2.15, 1.15, True,
        "as litert-xnnpack, with mcdask.worker.litert-kernels: mixed: each run of dense layers loads on the "
        "built-in kernels (their factor, 1.15), every other layer on XNNPACK (2.15; a few MB of convolution "
        "weights); measured with python -m bench.backends: loading peaks at 1.04-1.13x the weight bytes"),
    "litert-auto": Runtime(
        "litert-auto", 80_400_000, 2.15, 1.15, True,
        "as litert-mixed, which it is where memory is short: a device loads its dense layers on XNNPACK as well "
        "only when what it holds plus XNNPACK's peak of its new slices fits what it may use (mcdask.runtime.plugin)"),
    "tf1.5": Runtime(
        "tf1.5", _pi3.BASELINE_BYTES, _pi3.WEIGHT_MEMORY_FACTOR, None, False,
        "the paper's Pis (TensorFlow 1.5, Keras 2.1): least squares over RA-L Fig. 10 task memory "
        "(mcdask.model.kinds.pi3)"),
}
#: what a command's ``--backend`` may name: a runtime, or ``litert`` for litert's configured kernels
NAMES = ("tensorflow", "litert", *(n for n in RUNTIMES if n != "tensorflow"))
DEPLOYABLE = tuple(n for n, r in RUNTIMES.items() if r.deployable)


def for_backend(backend: str | None, litert_kernels: str | None = None) -> str:
    """The runtime a deployment's ``mcdask.worker.backend`` (and, for litert,
    ``mcdask.worker.litert-kernels``) puts on the devices."""
    backend = backend or DEFAULT
    return f"litert-{litert_kernels or LITERT_KERNELS}" if backend == "litert" else backend


def get(name: str) -> Runtime:
    """The runtime ``name`` (``litert``: litert on its default kernels)."""
    try:
        return RUNTIMES[for_backend(name) if name == "litert" else name]
    except KeyError:
        raise ProfileError(f"unknown runtime {name!r}; known: {', '.join(NAMES)}") from None


def on(kind: DeviceKind, runtime: str) -> DeviceKind:
    """``kind`` running ``runtime``: its baseline and weight factor (with their source)."""
    r = get(runtime)
    return replace(kind, baseline_bytes=r.baseline_bytes, weight_memory_factor=r.weight_memory_factor,
                   dense_weight_memory_factor=r.dense_weight_memory_factor, layer_memory_bytes={},
                   sources={**kind.sources, "runtime": f"{r.name}: {r.source}"},
                   measured={**kind.measured, "runtime": r.name})
