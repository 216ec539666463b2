"""A Keras model as a workload: ``from_keras(model)`` reads its graph into the plain data mcdask
plans and slices (``workloads.spec``). The three built-in models are read the same way from
their own Keras definitions (``workloads/alexnet.py`` ...), so a user's model and a built-in one
are the same thing to mcdask.

What it reads:
- per-frame layers: Conv2D, MaxPooling2D, Flatten, Dense (square kernels, pools and strides;
  relu, linear or softmax activations), in a chain or a graph of branches;
- ``TimeDistributed(per-frame model or layer)`` over an input of shape (window, H, W, C): the
  wrapped layers run once per frame (so they can be replicated across devices), and the window
  becomes the reading width of the layer that consumes them;
- ``TemporalPyramid`` (``workloads.keras_layers``) over such windowed per-frame results.

Inputs keep their Keras names and get a role (``roles``): "image" (an RGB frame, read as
``uint8`` and scaled to [0, 1] on the devices) or "flow" (stacked optical flow, computed from
the image where the frames are read). A model with one RGB input needs no roles: its input is
the workload's ``frame``. Imports Keras only inside ``from_keras`` / ``load``.
"""

from __future__ import annotations

from typing import Any

from .spec import Builder, Workload

SUPPORTED = ("Conv2D", "MaxPooling2D", "Flatten", "Dense", "TimeDistributed", "TemporalPyramid")
ROLES = ("image", "flow")


class UnsupportedModel(ValueError):
    """The model has a layer or a shape mcdask cannot split; the message names it."""


def _square(value, what: str, layer) -> int:
    v = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(set(v)) != 1:
        raise UnsupportedModel(f"layer {layer.name!r}: {what} {v} is not square; mcdask splits square ones")
    return int(v[0])


def _activation(layer) -> str:
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if name not in ("relu", "linear", "softmax"):
        raise UnsupportedModel(f"layer {layer.name!r}: activation {name!r}; supported: relu, linear, softmax")
    return name


def _wiring(model) -> tuple[list[tuple[str, tuple]], list[tuple[Any, list[str]]]]:
    """([(input name, shape without batch)], [(layer, names of the layers it reads)]) in
    topological order, from the model's own config (``get_config``: Keras's public graph)."""
    layers = {l.name: l for l in model.layers}
    config = model.get_config()
    if type(model).__name__ == "Sequential":
        first = model.inputs[0]
        inputs = [(first.name, tuple(int(d) for d in first.shape[1:]))]
        out, prev = [], inputs[0][0]
        for l in model.layers:
            out.append((l, [prev]))
            prev = l.name
        return inputs, out
    inputs, out = [], []
    for entry in config["layers"]:
        layer = layers[entry["name"]]
        if entry["class_name"] == "InputLayer":
            inputs.append((layer.name, tuple(int(d) for d in layer.batch_shape[1:])))
            continue
        nodes = entry["inbound_nodes"]
        if len(nodes) != 1:
            raise UnsupportedModel(f"layer {layer.name!r} is called {len(nodes)} times; mcdask splits layers "
                                   "used once")
        out.append((layer, _history(nodes[0]["args"])))
    return inputs, out


def _history(args) -> list[str]:
    """Names of the layers whose outputs a node's arguments are."""
    names: list[str] = []
    for a in args:
        if isinstance(a, (list, tuple)):
            names += _history(a)
        elif isinstance(a, dict) and a.get("class_name") == "__keras_tensor__":
            names.append(a["config"]["keras_history"][0])
    return names


class _Reader:
    """Walks a model's graph into a ``Builder``; ``window[x]`` is the number of frames a
    per-frame result ``x`` stands for (inside a TimeDistributed), ``alias`` maps Keras names to
    the mcdask layer that holds their output."""

    def __init__(self, builder: Builder):
        self.b = builder
        self.window: dict[str, int] = {}
        self.alias: dict[str, str] = {}
        self.in_frame = False          # inside a TimeDistributed: layers see one frame at a time

    def model(self, model, feeds: list[str]) -> str:
        """Add ``model``'s layers reading ``feeds`` (one name per model input); its output's name."""
        inputs, wiring = _wiring(model)
        for (name, _), feed in zip(inputs, feeds):
            self.alias[name] = feed
        last = feeds[0]
        for layer, reads in wiring:
            last = self.layer(layer, [self.alias.get(x, x) for x in reads])
            self.alias[layer.name] = last
        return last

    def layer(self, layer, xs: list[str]) -> str:
        kind = type(layer).__name__
        if kind not in SUPPORTED:
            raise UnsupportedModel(f"layer {layer.name!r} is a {kind}; mcdask splits graphs of "
                                   f"{', '.join(SUPPORTED)}")
        if kind == "TimeDistributed":
            return self.per_frame(layer, xs[0])
        if kind == "TemporalPyramid":
            missing = [x for x in xs if x not in self.window]
            if missing:
                raise UnsupportedModel(f"layer {layer.name!r} pools windows of frames, but {missing} are not "
                                       "per-frame results (TimeDistributed)")
            return self.b.pyramid(layer.name, tuple(xs), tuple(self.window[x] for x in xs), layer.levels)
        if len(xs) != 1:
            raise UnsupportedModel(f"layer {layer.name!r} reads {len(xs)} tensors; only the pyramid joins branches")
        x = xs[0]
        if not self.in_frame and self.window.get(x, 1) > 1:
            raise UnsupportedModel(f"layer {layer.name!r} reads a window of {self.window[x]} frames; wrap per-frame "
                                   "layers in TimeDistributed, and pool windows with TemporalPyramid")
        return self.plain(layer, x)

    def per_frame(self, td, x: str) -> str:
        if x not in self.window:
            raise UnsupportedModel(f"layer {td.name!r}: TimeDistributed over {x!r}, which is not an input with a "
                                   "window of frames")
        if self.in_frame:
            raise UnsupportedModel(f"layer {td.name!r}: a TimeDistributed inside a TimeDistributed")
        inner, self.in_frame = td.layer, True
        try:
            out = self.model(inner, [x]) if hasattr(inner, "layers") else self.layer(inner, [x])
        finally:
            self.in_frame = False
        self.window[out] = self.window[x]
        return out

    def plain(self, layer, x: str) -> str:
        b, kind = self.b, type(layer).__name__
        if kind == "Conv2D":
            if _square(layer.dilation_rate, "dilation", layer) != 1 or layer.groups != 1:
                raise UnsupportedModel(f"layer {layer.name!r}: dilated or grouped convolutions are not supported")
            return b.conv(layer.name, x, int(layer.filters), _square(layer.kernel_size, "kernel", layer),
                          _square(layer.strides, "strides", layer), layer.padding,
                          _activation(layer))  # type: ignore[arg-type]
        if kind == "MaxPooling2D":
            size = _square(layer.pool_size, "pool size", layer)
            if _square(layer.strides, "strides", layer) != size or layer.padding != "valid":
                raise UnsupportedModel(f"layer {layer.name!r}: pools must have strides equal to their size "
                                       "and valid padding")
            return b.pool(layer.name, x, size)
        if kind == "Flatten":
            return b.flatten(layer.name, x)
        if not layer.use_bias:
            raise UnsupportedModel(f"layer {layer.name!r}: dense layers without a bias are not supported")
        return b.dense(layer.name, x, int(layer.units), _activation(layer))  # type: ignore[arg-type]


def _inputs(model, roles: dict[str, str] | None) -> tuple[dict[str, tuple], dict[str, int], dict[str, str]]:
    """(per-frame input shapes, windows of windowed inputs, roles), checked."""
    shapes = {t.name: tuple(int(d) for d in t.shape[1:]) for t in model.inputs}
    if roles is None:
        if len(shapes) != 1 or len(next(iter(shapes.values()))) != 3 or next(iter(shapes.values()))[-1] != 3:
            raise UnsupportedModel(f"model {model.name!r} takes {list(shapes.values())}; a model without input "
                                   "roles must take one RGB image (H, W, 3)")
        roles = {next(iter(shapes)): "image"}
    if set(roles) != set(shapes) or not set(roles.values()) <= set(ROLES):
        raise UnsupportedModel(f"model {model.name!r}: roles {roles} must give each input {sorted(shapes)} one of "
                               f"{', '.join(ROLES)}")
    frame, windows = {}, {}
    for name, shape in shapes.items():
        if len(shape) == 4:
            windows[name], shape = shape[0], shape[1:]
        if len(shape) != 3:
            raise UnsupportedModel(f"input {name!r} has shape {shape}; mcdask reads (H, W, C) frames, or "
                                   "(window, H, W, C) windows of them")
        frame[name] = shape
    return frame, windows, roles


def from_keras(model, name: str | None = None, *, roles: dict[str, str] | None = None,
               description: str | None = None) -> Workload:
    """The workload of Keras ``model`` (see the module docstring); raises UnsupportedModel
    naming the first layer it cannot take."""
    shapes, windows, roles = _inputs(model, roles)
    rename = {k: "frame" for k in shapes} if len(shapes) == 1 else {k: k for k in shapes}
    b = Builder({rename[k]: v for k, v in shapes.items()})
    reader = _Reader(b)
    reader.window = {rename[k]: w for k, w in windows.items()}
    reader.model(model, [rename[k] for k in shapes])
    last = b.layers[-1] if b.layers else None
    if last is None or last.kind != "dense":
        raise UnsupportedModel(f"model {model.name!r} must end in a Dense layer (its classes)")
    if last.name in reader.window:
        raise UnsupportedModel(f"model {model.name!r} ends in a per-frame layer; its window must be pooled")
    return b.workload(name or model.name, last.units, description or f"Keras model {model.name!r}",
                      roles={rename[k]: v for k, v in roles.items()})


def load(path: str, name: str | None = None):
    """(workload, Keras model) of a ``.keras`` file."""
    import keras

    from . import keras_layers  # noqa: F401  (registers TemporalPyramid for loading)

    model = keras.saving.load_model(path, compile=False)
    return from_keras(model, name), model
