"""Build a slice of a workload as a compiled TensorFlow function, and merge shard outputs.

A slice is the layers ``[start, end)`` of a workload, with the last (dense) layer optionally
restricted to output units ``[a, b)``. It reads the stage's external inputs (windowed ones as
``(batch, window, features)``) and returns the stage's exports. Weights come from
``mcdask.runtime.weights``, layer by layer, so building a slice only ever holds that slice.

This is the only module of the runtime that imports TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

import workloads
from mcdask.runtime.quiet import quiet
from mcdask.runtime.weights import WeightsSource, keras_names, layer_weights, preprocessing

quiet()  # before anything here imports TensorFlow


@dataclass(frozen=True)
class SliceSpec:
    """What to build: plain data, the same on every device."""

    workload: str
    start: int
    end: int
    units: tuple[int, int] | None = None
    weights: WeightsSource = WeightsSource()

    @property
    def key(self) -> str:
        """Content key: two plans that need the same slice share one built copy."""
        u = f"[{self.units[0]}:{self.units[1]}]" if self.units else ""
        return f"{self.workload}/{self.start}:{self.end}{u}@{self.weights.id}"


_TF_READY = False


def ensure_tf(intra_op: int | None = None) -> int:
    """Import TensorFlow quietly and set its thread pools, once per process: ``intra_op``
    threads, else ``mcdask.worker.intra-op-threads``, else every core this process may use; one
    inter-op thread. Every TensorFlow user of mcdask (the worker plugin, the profiler, the farm's
    preload) comes through here. Returns the intra-op threads in effect."""
    global _TF_READY
    import dask.config
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0))
    if not _TF_READY:
        set_threads(intra_op or dask.config.get("mcdask.worker.intra-op-threads", None) or cores)
        _TF_READY = True
    return int(tf.config.threading.get_intra_op_parallelism_threads()) or cores


def set_threads(intra_op: int | None, inter_op: int = 1) -> bool:
    """Set TensorFlow's thread pools; True if applied (they can only be set before TF runs)."""
    import tensorflow as tf

    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(int(intra_op))
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))
        return True
    except RuntimeError:
        return False


class _Given:
    """A Keras initializer that hands over one array, once, then lets go of it: the layer's
    variable is the only copy left, so building a slice peaks near 2x its weights (NumPy
    array + variable) instead of zeros + array + assignment copies."""

    def __init__(self, value: np.ndarray | None):
        self.value = value

    def __call__(self, shape, dtype=None):
        value, self.value = self.value, None
        if value is None:
            return np.zeros(shape, np.float32)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"weights of shape {value.shape} for a variable of shape {tuple(shape)}")
        return value


def _keras_layer(layer, units: tuple[int, int] | None, weights: list[np.ndarray] | None = None):
    from keras import layers as kl

    kernel, bias = weights if weights else (None, None)
    init = {"kernel_initializer": _Given(kernel), "bias_initializer": _Given(bias)}
    if layer.kind == "conv":
        return kl.Conv2D(layer.filters, layer.kernel, strides=layer.strides, padding=layer.padding,
                         activation=layer.activation, name=layer.name, **init)
    if layer.kind == "pool":
        return kl.MaxPooling2D(layer.pool, strides=layer.strides, name=layer.name)
    if layer.kind == "flatten":
        return kl.Flatten(name=layer.name)
    if layer.kind == "dense":
        n = layer.units if units is None else units[1] - units[0]
        act = layer.activation if units is None or layer.activation in workloads.spec.ELEMENTWISE else "linear"
        return kl.Dense(n, activation=act, name=layer.name, **init)
    if layer.kind == "pyramid":
        from workloads.keras_layers import TemporalPyramid

        return TemporalPyramid(layer.levels, name=layer.name)
    raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")


def build_model(workload, start: int = 0, end: int | None = None, units: tuple[int, int] | None = None,
                weights: WeightsSource | None = None, *, set_weights: bool = True):
    """A Keras functional model of layers ``[start, end)``; inputs and outputs are lists in the
    order of ``workload.stage_inputs`` / ``workload.stage_outputs``."""
    import keras

    end = len(workload.layers) if end is None else end
    weights = weights or WeightsSource()
    names_in = workload.stage_inputs(start, end)
    first = workload.layers[start]
    tensors, inputs = {}, []
    for name in names_in:
        shape = workload.shape_of(name)
        w = workload.window_of(first.name, name) if name in first.inputs else 1
        if first.window:
            shape = (w,) + shape
        t = keras.Input(shape=shape, name=name, dtype="float32")
        tensors[name] = t
        inputs.append(t)
    kn = keras_names(workload)
    aliases = workload.keras_applications.get("names", {})
    for i in range(start, end):
        layer = workload.layers[i]
        u = units if i == end - 1 else None
        arrays = (layer_weights(layer, weights, u, kn[layer.name], aliases.get(layer.name))
                  if set_weights and layer.weight_shapes else None)
        kl = _keras_layer(layer, u, arrays)
        del arrays  # the initializer holds the only reference until the variable is made
        args = [tensors[x] for x in layer.inputs]
        tensors[layer.name] = kl(args if layer.kind == "pyramid" else args[0])
        if layer.weight_shapes:  # built: a plain initializer again, so the model saves like any other
            kl.kernel_initializer = kl.bias_initializer = keras.initializers.Zeros()
    outputs = [tensors[n] for n in workload.stage_outputs(start, end)]
    return keras.Model(inputs, outputs, name=f"{workload.name}_{start}_{end}")


class Slice:
    """A built slice: ``slice(feeds)`` maps input name -> array to export name -> array."""

    def __init__(self, spec: SliceSpec):
        import tensorflow as tf

        self.spec = spec
        self.workload = workloads.get(spec.workload)
        w = self.workload
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
        model = build_model(w, spec.start, spec.end, spec.units, spec.weights)
        self._model = model
        signature = [tf.TensorSpec((None,) + tuple(t.shape[1:]), tf.float32, name=x)
                     for x, t in zip(self.inputs, model.inputs)]

        @tf.function(input_signature=signature, autograph=False)
        def fn(*xs):
            out = model(list(xs), training=False)
            return out if isinstance(out, (list, tuple)) else [out]

        self._fn = fn

    def input_shape(self, name: str) -> tuple[int, ...]:
        shape = self.workload.shape_of(name)
        w = self.windows[name]
        return ((w,) + shape) if self.workload.layers[self.spec.start].window else shape

    def example_feeds(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {x: np.zeros((batch,) + self.input_shape(x), np.float32) for x in self.inputs}

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._fn(*[np.asarray(feeds[x], np.float32) for x in self.inputs])
        return {name: o.numpy() for name, o in zip(self.outputs, outs)}

    def warm_up(self) -> None:
        self(self.example_feeds())


# ---- merging shard outputs and assembling a slice's feeds (pure NumPy) ----------------------

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
