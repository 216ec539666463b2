"""The litert backend: a slice as a LiteRT interpreter over a flatbuffer on the device's disk.

The client converts each slice from the same Keras layers and weights the tensorflow backend
builds (``mcdask.runtime.convert``) and ships the flatbuffer; the device keeps it in its disk
cache (``mcdask.runtime.flatcache``) and runs it here with ``ai_edge_litert``, one thread, with
XNNPACK's kernels or LiteRT's built-in ones (``SliceSpec.kernels``: the built-in ones read the
weights where they lie, XNNPACK repacks them into a second copy), or both (``mixed`` and
``auto``: one interpreter per run of dense or other layers, ``mcdask.runtime.pieces.parts``,
called one after the other as one slice), on the process's one model thread
(``mcdask.runtime.model_thread``). The flatbuffer is opened by path, so its weights are file
pages the system can drop, not a copy on the heap.

Imports neither TensorFlow nor ``mcdask.runtime.slices``: a device that runs only litert
slices never loads TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from mcdask.runtime import model_thread
from mcdask.runtime.pieces import SliceShape, SliceSpec, parts


def interpreter(spec_kernels: str, *, model_path: str | None = None, model_content: bytes | None = None):
    """A one-thread LiteRT interpreter of a flatbuffer, with ``xnnpack`` or ``builtin`` kernels."""
    from ai_edge_litert import interpreter as lite

    resolver = (lite.OpResolverType.AUTO if spec_kernels == "xnnpack"
                else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return lite.Interpreter(model_path=model_path, model_content=model_content, num_threads=1,
                            experimental_op_resolver_type=resolver)


_xnnpack_announced = False


def allocate(it, xnnpack: bool) -> None:
    """``it.allocate_tensors()``; the process's first on XNNPACK with stderr muted: it applies the
    delegate, which announces itself on fd 2 once per process whatever the log levels
    (``quiet.stderr_muted``)."""
    global _xnnpack_announced
    if not xnnpack or _xnnpack_announced:
        it.allocate_tensors()
        return
    from mcdask.runtime.quiet import stderr_muted

    with stderr_muted():
        it.allocate_tensors()
    _xnnpack_announced = True


class LiteSlice(SliceShape):
    """A built slice on LiteRT: ``slice(feeds)`` maps input name -> array to export name -> array.
    Inputs and exports are found by name in the flatbuffer's signature. A new batch size (or
    window) resizes the inputs and re-plans the tensors once."""

    def __init__(self, spec: SliceSpec, path: Path | None = None, content: bytes | None = None):
        super().__init__(spec)
        self.path = path
        self._it = interpreter(spec.kernels, model_path=str(path) if path else None, model_content=content)
        runner = self._it.get_signature_runner()
        ins, outs = runner.get_input_details(), runner.get_output_details()
        if set(ins) != set(self.inputs) or set(outs) != set(self.outputs):
            raise ValueError(f"flatbuffer of {spec.key} takes {sorted(ins)} and gives {sorted(outs)}; "
                             f"the slice takes {self.inputs} and exports {self.outputs}")
        self._in = [ins[x]["index"] for x in self.inputs]
        self._out = [outs[x]["index"] for x in self.outputs]
        self._shapes: list[tuple[int, ...]] = []

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = [np.ascontiguousarray(feeds[x], np.float32) for x in self.inputs]
        return model_thread.run(self._invoke, xs)

    def _invoke(self, xs: list[np.ndarray]) -> dict[str, np.ndarray]:
        shapes = [x.shape for x in xs]
        if shapes != self._shapes:
            for index, shape in zip(self._in, shapes):
                self._it.resize_tensor_input(index, list(shape), strict=True)
            allocate(self._it, self.spec.kernels == "xnnpack")
            self._shapes = shapes
        for index, x in zip(self._in, xs):
            self._it.set_tensor(index, x)
        self._it.invoke()
        return {name: self._it.get_tensor(index) for name, index in zip(self.outputs, self._out)}


class LiteChain(SliceShape):
    """A ``mixed`` or ``auto`` slice: its parts' interpreters, each fed from the slice's inputs and the
    exports of the parts before it, in one call on the model thread."""

    def __init__(self, spec: SliceSpec, pieces: list[LiteSlice]):
        super().__init__(spec)
        self.parts = pieces

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = {x: np.ascontiguousarray(feeds[x], np.float32) for x in self.inputs}
        return model_thread.run(self._invoke, values)

    def _invoke(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for part in self.parts:
            values.update(part._invoke([values[x] for x in part.inputs]))
        return {x: values[x] for x in self.outputs}


def load(spec: SliceSpec, path_of: Callable[[SliceSpec], Path], fast_dense: bool = False) -> LiteSlice | LiteChain:
    """``spec`` on LiteRT, each of its parts' flatbuffers found by ``path_of``: one interpreter
    (its spec names the kernels it runs), or a chain of them. With ``fast_dense`` an ``auto``
    spec runs its dense parts on XNNPACK as well."""
    fast = fast_dense and spec.kernels == "auto"
    pieces = [LiteSlice(replace(part, kernels="xnnpack") if fast else part, path_of(part)) for part in parts(spec)]
    return pieces[0] if len(pieces) == 1 else LiteChain(spec, pieces)
