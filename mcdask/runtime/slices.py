"""Build a slice of a workload as a compiled TensorFlow function (the tensorflow backend).

A slice (``mcdask.runtime.pieces``: its spec, geometry, and the NumPy that merges shards and
assembles feeds, re-exported here) reads the stage's external inputs (windowed ones as
``(batch, window, features)``) and returns the stage's exports. Weights come from
``mcdask.runtime.weights``, layer by layer, so building a slice only ever holds that slice.

This is the only module of the runtime that imports TensorFlow (``convert`` reaches it through
here).
"""

from __future__ import annotations

import math
import os

import numpy as np

import workloads
from mcdask.runtime.pieces import (  # noqa: F401  (re-exported: the NumPy half of a slice)
    CAFFE_MEAN_BGR,
    SliceShape,
    SliceSpec,
    assemble,
    merge,
    prepare_input,
    softmax,
)
from mcdask.runtime.quiet import quiet
from mcdask.runtime.weights import WeightsSource, fill_weights, keras_names

quiet()  # before anything here imports TensorFlow


_TF_READY = False


def ensure_tf(intra_op: int | None = None) -> int:
    """Import TensorFlow quietly and set its thread pools, once per process: ``intra_op``
    threads, else ``mcdask.worker.intra-op-threads``, else every core this process may use; one
    inter-op thread. Every TensorFlow user of mcdask (the worker plugin, the profiler, the farm's
    preload) comes through here. Returns the intra-op threads in effect."""
    global _TF_READY
    import dask.config

    try:
        import tensorflow as tf
    except ImportError as e:  # a device installed for litert only
        raise ImportError(f"this device has no TensorFlow for a tensorflow deployment ({e}); install "
                          "mcdask[device] on it, or deploy with --backend litert") from None

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
    """A Keras initializer that hands over one tensor, once, then lets go of it."""

    def __init__(self, value=None):
        self.value = value

    def __call__(self, shape, dtype=None):
        value, self.value = self.value, None
        if value is None:
            return np.zeros(shape, np.float32)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"weights of shape {tuple(value.shape)} for a variable of shape {tuple(shape)}")
        return value


def _aligned(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose data starts on a 64-byte boundary. TensorFlow's CPU
    kernels require that of every buffer they read: adopting an unaligned one aborts the process."""
    n = 4 * math.prod(shape)
    raw = np.empty(n + 64, np.uint8)
    off = -raw.ctypes.data % 64
    return raw[off:off + n].view(np.float32).reshape(shape)


def _adopted(layer, units: tuple[int, int] | None, weights: WeightsSource, keras_name: str,
             alias: str | None) -> list:
    """``layer``'s [kernel, bias] as tensors that own aligned NumPy buffers, the kernel filled a
    few rows at a time (``fill_weights``). Handed over by DLPack (no copy), a Keras variable
    made from one adopts its buffer, so building a slice holds its weights once, plus one chunk
    of rows: 1.03x its weight bytes, where converting a NumPy array costs three copies."""
    import tensorflow as tf

    kshape = tuple(layer.weight_shapes[0][:-1]) + ((units[1] - units[0]) if units else layer.weight_shapes[0][-1],)
    kernel = _aligned(kshape)

    def put(r0: int, rows: np.ndarray) -> None:
        kernel[r0:r0 + len(rows)] = rows

    bias = _aligned((kshape[-1],))
    bias[:] = fill_weights(layer, weights, put, units, keras_name, alias)
    return [tf.experimental.dlpack.from_dlpack(x.__dlpack__()) for x in (kernel, bias)]


def _keras_layer(layer, units: tuple[int, int] | None, weights: list | None = None):
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
        arrays = (_adopted(layer, u, weights, kn[layer.name], aliases.get(layer.name))
                  if set_weights and layer.weight_shapes else None)
        kl = _keras_layer(layer, u, arrays)
        del arrays  # the initializer holds the only reference until the variable is made
        args = [tensors[x] for x in layer.inputs]
        tensors[layer.name] = kl(args if layer.kind == "pyramid" else args[0])
        if layer.weight_shapes:  # built: a plain initializer again, so the model saves like any other
            kl.kernel_initializer = kl.bias_initializer = keras.initializers.Zeros()
    outputs = [tensors[n] for n in workload.stage_outputs(start, end)]
    return keras.Model(inputs, outputs, name=f"{workload.name}_{start}_{end}")


class Slice(SliceShape):
    """A built slice: ``slice(feeds)`` maps input name -> array to export name -> array."""

    def __init__(self, spec: SliceSpec):
        import tensorflow as tf

        super().__init__(spec)
        model = build_model(self.workload, spec.start, spec.end, spec.units, spec.weights)
        self._model = model
        signature = [tf.TensorSpec((None,) + tuple(t.shape[1:]), tf.float32, name=x)
                     for x, t in zip(self.inputs, model.inputs)]

        @tf.function(input_signature=signature, autograph=False)
        def fn(*xs):
            out = model(list(xs), training=False)
            return out if isinstance(out, (list, tuple)) else [out]

        self._fn = fn

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._fn(*[np.asarray(feeds[x], np.float32) for x in self.inputs])
        return {name: o.numpy() for name, o in zip(self.outputs, outs)}
