"""What a slice is, as plain data and NumPy, for every backend: its spec (``SliceSpec``), its
geometry (``SliceShape``: inputs, outputs, windows, weight bytes), and how a task's feeds become
its inputs (``assemble``: shards merged, windows stacked, frames preprocessed).

A slice is the layers ``[start, end)`` of a workload, with the last (dense) layer optionally
restricted to output units ``[a, b)``. The backends build it from this: ``slices`` as a
TensorFlow function, ``litert`` as a LiteRT interpreter. This module imports neither
TensorFlow nor LiteRT, so a LiteRT device never loads TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

import workloads
from mcdask.runtime.weights import WeightsSource

Backend = Literal["tensorflow", "litert"]
Kernels = Literal["xnnpack", "builtin", "mixed", "auto"]
BACKENDS: tuple[str, ...] = ("tensorflow", "litert")
KERNELS: tuple[str, ...] = ("auto", "mixed", "xnnpack", "builtin")


@dataclass(frozen=True)
class SliceSpec:
    """What to build: plain data, the same on every device. ``kernels`` matters only to the
    litert backend: XNNPACK, LiteRT's built-in kernels (which keep no second copy of the
    weights), ``mixed``: each run of dense layers on the built-in kernels, every other layer on
    XNNPACK (``parts``), or ``auto``: as mixed, with the dense runs on XNNPACK too on a device
    whose memory holds that second copy (``mcdask.runtime.plugin``)."""

    workload: str
    start: int
    end: int
    units: tuple[int, int] | None = None
    weights: WeightsSource = WeightsSource()
    backend: Backend = "tensorflow"
    kernels: Kernels = "xnnpack"

    @property
    def key(self) -> str:
        """Content key: two plans that need the same slice share one built copy."""
        u = f"[{self.units[0]}:{self.units[1]}]" if self.units else ""
        runtime = "" if self.backend == "tensorflow" else f"#{self.backend}-{self.kernels}"
        return f"{self.workload}/{self.start}:{self.end}{u}@{self.weights.id}{runtime}"


def parts(spec: SliceSpec) -> list[SliceSpec]:
    """The slices a device loads for ``spec``, run one after the other: ``spec`` itself, or for
    litert's ``mixed`` (or ``auto``) kernels one per run of consecutive dense or non-dense
    layers, dense runs on the built-in kernels and the rest on XNNPACK. Measured here (``python -m bench.backends``):
    XNNPACK runs AlexNet's convolutions 3x faster than the built-in kernels and repacks their
    weights into a second copy, a few MB; on the dense layers, which hold 94-99 % of the
    weights, the built-in kernels keep that copy off a 1 GB device for 1.4x their time."""
    if spec.backend != "litert" or spec.kernels not in ("mixed", "auto"):
        return [spec]
    layers = workloads.get(spec.workload).layers
    runs: list[list[int]] = []
    for i in range(spec.start, spec.end):
        if runs and (layers[i].kind == "dense") == (layers[runs[-1][0]].kind == "dense"):
            runs[-1].append(i)
        else:
            runs.append([i])
    return [replace(spec, start=run[0], end=run[-1] + 1, units=spec.units if run[-1] == spec.end - 1 else None,
                    kernels="builtin" if layers[run[0]].kind == "dense" else "xnnpack") for run in runs]


class SliceShape:
    """A slice's geometry, whatever runs it: input and export names (in the order of
    ``workload.stage_inputs`` / ``stage_outputs``), each input's window, the inputs stacked as
    ``(batch, window, ...)``, how its image input is preprocessed, and its weight bytes."""

    def __init__(self, spec: SliceSpec):
        from mcdask.runtime.weights import preprocessing

        self.spec = spec
        self.workload = w = workloads.get(spec.workload)
        self.inputs = w.stage_inputs(spec.start, spec.end)
        self.outputs = w.stage_outputs(spec.start, spec.end)
        first = w.layers[spec.start]
        self.windows = {x: (w.window_of(first.name, x) if x in first.inputs else 1) for x in self.inputs}
        self.stacked = frozenset(self.inputs) if first.window else frozenset()
        #: how this slice's image inputs are fed to its weights (``assemble``)
        self.preprocess = preprocessing(w, spec.weights) if w.input_with("image") in self.inputs else w.preprocess
        self.param_bytes = sum(
            l.shard_param_bytes(spec.units[1] - spec.units[0]) if (i == spec.end - 1 and spec.units)
            else l.param_bytes
            for i, l in enumerate(w.layers[spec.start:spec.end], spec.start))

    def input_shape(self, name: str) -> tuple[int, ...]:
        shape = self.workload.shape_of(name)
        w = self.windows[name]
        return ((w,) + shape) if self.workload.layers[self.spec.start].window else shape

    def example_feeds(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {x: np.zeros((batch,) + self.input_shape(x), np.float32) for x in self.inputs}

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def warm_up(self) -> None:
        self(self.example_feeds())


# ---- merging shard outputs and assembling a slice's feeds ------------------------------------

def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def merge(layer, parts: list[np.ndarray]) -> np.ndarray:
    """Join the shards of ``layer``'s output in unit order; a split layer's non-elementwise
    activation (softmax) runs here, on every unit."""
    if len(parts) == 1:
        return parts[0]
    x = np.concatenate(parts, axis=-1)
    return softmax(x) if layer.activation not in workloads.spec.ELEMENTWISE else x


#: ImageNet's mean pixel in BGR order, as caffe (and Keras-applications' "caffe" mode) subtracts it
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def prepare_input(x: np.ndarray, preprocess: str = "scale") -> np.ndarray:
    """Frames travel as uint8 (4x fewer bytes); the model reads float32, preprocessed as its
    weights expect: "scale" x/255 in [0, 1]; "caffe" RGB -> BGR, minus ``CAFFE_MEAN_BGR``, not
    scaled. Float inputs (optical flow, or frames given as float) are taken as they are."""
    if x.dtype != np.uint8:
        return x.astype(np.float32, copy=False)
    if preprocess == "caffe":
        return x[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR
    if preprocess == "scale":
        return x.astype(np.float32) * np.float32(1 / 255)
    raise ValueError(f"unknown preprocessing {preprocess!r}")


def assemble(workload, feeds: dict, stacked: frozenset = frozenset(),
             preprocess: str = "scale") -> dict[str, np.ndarray]:
    """Turn what a task receives into a slice's feeds.

    ``feeds[name]`` is an array for a workload input (the image input is preprocessed with
    ``preprocess``, other uint8 inputs scaled), else a list over frames (length = window) of
    lists over the producer's shards of export dicts. Names in ``stacked`` (the inputs of a
    windowed layer) become ``(batch, window, ...)``.
    """
    out = {}
    for name, value in feeds.items():
        if isinstance(value, np.ndarray):
            out[name] = prepare_input(value, preprocess if workload.roles.get(name) == "image" else "scale")
            continue
        layer = workload.layer(name)
        frames = [merge(layer, [part[name] for part in shards]) for shards in value]
        out[name] = np.stack(frames, axis=1) if name in stacked else frames[0]
    return out
