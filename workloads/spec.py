"""Workload descriptions as plain data: layers, their wiring and their per-layer facts.

A workload is a list of layers in topological order. Every layer names its inputs: either
a workload input (for example ``"frame"``) or an earlier layer. Ranges of layers are
half-open and zero-based everywhere in mcdask: ``[start, end)``; so are ranges of output
units of a dense layer. This module imports neither TensorFlow nor Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

LayerKind = Literal["conv", "pool", "flatten", "dense", "pyramid"]
Activation = Literal["linear", "relu", "softmax"]

FLOAT_BYTES = 4
#: activations applied elementwise can run on each shard of a split dense layer;
#: the others (softmax) need every unit, so they run at the merge.
ELEMENTWISE = ("linear", "relu")
#: how a device turns an RGB uint8 frame into the model's input: "scale" x/255 (mcdask's default);
#: "caffe" RGB -> BGR and the ImageNet BGR means subtracted, no scaling (Keras-applications VGG16)
PREPROCESSING = ("scale", "caffe")


@dataclass(frozen=True)
class Layer:
    """One layer. ``inputs`` name workload inputs or earlier layers.

    ``window`` (pyramid layers only) gives, per input, how many consecutive frames of that
    input the layer sees: the layer for frame i reads frames ``[i - w + 1, i + 1)``.
    """

    name: str
    kind: LayerKind
    inputs: tuple[str, ...]
    output_shape: tuple[int, ...]
    filters: int = 0
    kernel: int = 0
    strides: int = 1
    padding: Literal["same", "valid"] = "valid"
    pool: int = 0
    units: int = 0
    activation: Activation = "linear"
    window: tuple[int, ...] = ()
    levels: int = 0
    input_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def splittable(self) -> bool:
        """Dense layers may be split by output units (model parallelism)."""
        return self.kind == "dense"

    @property
    def windowed(self) -> bool:
        return any(w > 1 for w in self.window)

    @property
    def weight_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of (kernel, bias) as Keras stores them; empty for weightless layers."""
        if self.kind == "conv":
            cin = self.input_shapes[0][-1]
            return ((self.kernel, self.kernel, cin, self.filters), (self.filters,))
        if self.kind == "dense":
            return ((self.input_shapes[0][-1], self.units), (self.units,))
        return ()

    @property
    def param_count(self) -> int:
        return sum(math.prod(s) for s in self.weight_shapes)

    @property
    def param_bytes(self) -> int:
        return self.param_count * FLOAT_BYTES

    @property
    def activation_bytes(self) -> int:
        """Bytes of this layer's output for one frame (float32)."""
        return math.prod(self.output_shape) * FLOAT_BYTES

    def shard_param_bytes(self, units: int) -> int:
        """Weight bytes of a shard holding ``units`` output units of this dense layer."""
        if self.kind != "dense":
            raise ValueError(f"layer {self.name!r} is a {self.kind} layer; only dense layers split")
        return (self.input_shapes[0][-1] + 1) * units * FLOAT_BYTES

    @property
    def flops(self) -> int:
        """Floating-point operations for one frame (a multiply-add counts 2)."""
        out = math.prod(self.output_shape)
        if self.kind == "conv":
            cin = self.input_shapes[0][-1]
            return 2 * out * self.kernel * self.kernel * cin
        if self.kind == "dense":
            return 2 * self.input_shapes[0][-1] * self.units
        if self.kind == "pool":
            return out * self.pool * self.pool
        if self.kind == "pyramid":
            return sum(w * math.prod(s[1:]) for w, s in zip(self.window, self.input_shapes)) * self.levels
        return 0

    def facts(self) -> dict:
        """The per-layer facts the planner uses, as plain data."""
        return {
            "name": self.name,
            "kind": self.kind,
            "inputs": list(self.inputs),
            "output_shape": list(self.output_shape),
            "param_bytes": self.param_bytes,
            "activation_bytes": self.activation_bytes,
            "flops": self.flops,
            "splittable": self.splittable,
            "units": self.units,
            "window": list(self.window),
        }


@dataclass(frozen=True)
class Workload:
    """A whole model: named inputs (shapes without the batch axis), layers, one output."""

    name: str
    inputs: dict[str, tuple[int, ...]]
    layers: tuple[Layer, ...]
    classes: int
    description: str = ""
    #: input name -> "image" (RGB frames) or "flow" (optical flow computed from the image input)
    roles: dict[str, str] = field(default_factory=dict)
    #: how image inputs are fed to the seeded weights and to files in mcdask's layouts (PREPROCESSING)
    preprocess: str = "scale"
    #: the label set its classes belong to ("imagenet-1k", "hmdb-51": ``workloads.labels``), or None
    labels: str | None = None
    #: a Keras-applications weights file (Keras 2 h5): ``{"names": {layer: its name there},
    #: "preprocess": what those weights expect}``; empty if the model has none
    keras_applications: dict = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {l.name: i for i, l in enumerate(self.layers)})
        if not self.roles:
            object.__setattr__(self, "roles", {name: "image" for name in self.inputs})
        for p in (self.preprocess, self.keras_applications.get("preprocess", self.preprocess)):
            if p not in PREPROCESSING:
                raise ValueError(f"{self.name}: preprocessing {p!r}; choose one of {', '.join(PREPROCESSING)}")
        seen = set(self.inputs)
        for layer in self.layers:
            missing = [x for x in layer.inputs if x not in seen]
            if missing:
                raise ValueError(f"{self.name}: layer {layer.name!r} reads {missing}, defined later or nowhere")
            seen.add(layer.name)

    def input_with(self, role: str) -> str | None:
        """The input that plays ``role`` ("image" or "flow"), if any."""
        return next((name for name, r in self.roles.items() if r == role), None)

    @property
    def image_input(self) -> str:
        """The input that reads the source's RGB frames."""
        name = self.input_with("image")
        if name is None:
            raise ValueError(f"workload {self.name!r} has no image input (roles {self.roles})")
        return name

    @property
    def flow_stack(self) -> int:
        """Frame pairs of optical flow stacked in the flow input (0: the workload reads no flow)."""
        name = self.input_with("flow")
        return self.inputs[name][-1] // 2 if name else 0

    @property
    def output(self) -> str:
        return self.layers[-1].name

    def layer(self, name: str) -> Layer:
        return self.layers[self.index[name]]

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name in self.inputs:
            return self.inputs[name]
        return self.layer(name).output_shape

    def window_of(self, consumer: str, name: str) -> int:
        """How many frames of ``name`` the layer ``consumer`` reads (1 unless windowed)."""
        layer = self.layer(consumer)
        if not layer.window:
            return 1
        return layer.window[layer.inputs.index(name)]

    def consumers(self, name: str) -> list[int]:
        return [i for i, l in enumerate(self.layers) if name in l.inputs]

    def stage_inputs(self, start: int, end: int) -> list[str]:
        """Names read by layers ``[start, end)`` but produced outside that range, in order."""
        inside = {l.name for l in self.layers[start:end]}
        out: list[str] = []
        for layer in self.layers[start:end]:
            for x in layer.inputs:
                if x not in inside and x not in out:
                    out.append(x)
        return out

    def stage_outputs(self, start: int, end: int) -> list[str]:
        """Names produced in ``[start, end)`` and read after it (or the workload output)."""
        out = []
        for i in range(start, end):
            name = self.layers[i].name
            if name == self.output or any(c >= end for c in self.consumers(name)):
                out.append(name)
        return out

    def cut_required(self, i: int) -> bool:
        """A stage must start at a windowed layer: its window spans other frames' tasks."""
        return self.layers[i].windowed

    @property
    def param_bytes(self) -> int:
        return sum(l.param_bytes for l in self.layers)

    @property
    def flops(self) -> int:
        return sum(l.flops for l in self.layers)

    @property
    def max_window(self) -> int:
        return max((max(l.window) for l in self.layers if l.window), default=1)

    def to_dict(self) -> dict:
        """Plain data (JSON-able) from which ``from_dict`` rebuilds this workload."""
        return {"name": self.name, "inputs": {k: list(v) for k, v in self.inputs.items()},
                "classes": self.classes, "description": self.description, "roles": dict(self.roles),
                "preprocess": self.preprocess, "labels": self.labels, "keras_applications": self.keras_applications,
                "layers": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(l).items()}
                           for l in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> Workload:
        def layer(x: dict) -> Layer:
            fields = dict(x)
            for key in ("inputs", "output_shape", "window"):
                fields[key] = tuple(fields[key])
            fields["input_shapes"] = tuple(tuple(s) for s in fields["input_shapes"])
            return Layer(**fields)
        return cls(d["name"], {k: tuple(v) for k, v in d["inputs"].items()}, tuple(layer(x) for x in d["layers"]),
                   d["classes"], d.get("description", ""), dict(d.get("roles") or {}),
                   d.get("preprocess", "scale"), d.get("labels"), dict(d.get("keras_applications") or {}))

    def facts(self) -> dict:
        return {
            "workload": self.name,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "classes": self.classes,
            "roles": dict(self.roles),
            "param_bytes": self.param_bytes,
            "flops": self.flops,
            "layers": [l.facts() for l in self.layers],
        }


class Builder:
    """Small helper to write layer lists with shape inference (channels-last)."""

    def __init__(self, inputs: dict[str, tuple[int, ...]]):
        self.inputs = dict(inputs)
        self.layers: list[Layer] = []
        self.shapes: dict[str, tuple[int, ...]] = dict(inputs)

    def _add(self, layer: Layer) -> str:
        self.layers.append(layer)
        self.shapes[layer.name] = layer.output_shape
        return layer.name

    def conv(self, name: str, x: str, filters: int, kernel: int, strides: int = 1,
             padding: Literal["same", "valid"] = "same", activation: Activation = "relu") -> str:
        h, w, _ = self.shapes[x]
        ho, wo = _out_hw(h, w, kernel, strides, padding)
        return self._add(Layer(name, "conv", (x,), (ho, wo, filters), filters=filters, kernel=kernel,
                               strides=strides, padding=padding, activation=activation,
                               input_shapes=(self.shapes[x],)))

    def pool(self, name: str, x: str, size: int = 2) -> str:
        h, w, c = self.shapes[x]
        ho, wo = _out_hw(h, w, size, size, "valid")
        return self._add(Layer(name, "pool", (x,), (ho, wo, c), pool=size, strides=size,
                               input_shapes=(self.shapes[x],)))

    def flatten(self, name: str, x: str) -> str:
        return self._add(Layer(name, "flatten", (x,), (math.prod(self.shapes[x]),),
                               input_shapes=(self.shapes[x],)))

    def dense(self, name: str, x: str, units: int, activation: Activation = "relu") -> str:
        return self._add(Layer(name, "dense", (x,), (units,), units=units, activation=activation,
                               input_shapes=(self.shapes[x],)))

    def pyramid(self, name: str, xs: tuple[str, ...], windows: tuple[int, ...], levels: int) -> str:
        ranges = 2**levels - 1
        feat = sum(self.shapes[x][-1] for x in xs)
        return self._add(Layer(name, "pyramid", xs, (ranges * feat,), window=windows, levels=levels,
                               input_shapes=tuple(self.shapes[x] for x in xs)))

    def workload(self, name: str, classes: int, description: str, roles: dict[str, str] | None = None) -> Workload:
        return Workload(name, self.inputs, tuple(self.layers), classes, description, dict(roles or {}))


def _out_hw(h: int, w: int, k: int, s: int, padding: str) -> tuple[int, int]:
    if padding == "same":
        return math.ceil(h / s), math.ceil(w / s)
    return (h - k) // s + 1, (w - k) // s + 1


def pyramid_ranges(window: int, levels: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` frame ranges of a temporal pyramid: level l has 2**l equal parts."""
    out = []
    for level in range(levels):
        parts = 2**level
        for j in range(parts):
            a, b = (j * window) // parts, ((j + 1) * window) // parts
            if b <= a:
                raise ValueError(f"window {window} too short for {levels} pyramid levels")
            out.append((a, b))
    return out
