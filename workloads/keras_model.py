"""A user's Keras model as a workload: ``from_keras(model)`` reads the layers of a chain of
supported Keras layers (Conv2D, MaxPooling2D, Flatten, Dense; square kernels, pools and
strides; relu, linear or softmax activations) into the same plain data as the built-in models,
so it can be profiled, planned, deployed and streamed; its weights load from the model's own
``.keras`` file by layer name. The model's one input is the workload's ``frame``: an RGB image,
read as ``uint8`` and scaled to [0, 1] on the devices, as for the built-in models.

Imports Keras only inside ``from_keras`` / ``load``.
"""

from __future__ import annotations

from .spec import Builder, Workload

SUPPORTED = ("InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Dense")


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


def from_keras(model, name: str | None = None) -> Workload:
    """The workload of Keras ``model`` (see the module docstring); raises UnsupportedModel
    naming the first layer it cannot take."""
    inputs = [tuple(int(d) for d in t.shape[1:]) for t in model.inputs]
    if len(inputs) != 1 or len(inputs[0]) != 3 or inputs[0][-1] != 3:
        raise UnsupportedModel(f"model {model.name!r} takes {inputs}; mcdask takes one RGB image input (H, W, 3)")
    b = Builder({"frame": inputs[0]})
    x = "frame"
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind not in SUPPORTED:
            raise UnsupportedModel(f"layer {layer.name!r} is a {kind}; mcdask can split chains of "
                                   f"{', '.join(SUPPORTED[1:])}")
        if kind == "Conv2D":
            if _square(layer.dilation_rate, "dilation", layer) != 1 or layer.groups != 1:
                raise UnsupportedModel(f"layer {layer.name!r}: dilated or grouped convolutions are not supported")
            x = b.conv(layer.name, x, int(layer.filters), _square(layer.kernel_size, "kernel", layer),
                       _square(layer.strides, "strides", layer), layer.padding, _activation(layer))  # type: ignore[arg-type]
        elif kind == "MaxPooling2D":
            size = _square(layer.pool_size, "pool size", layer)
            if _square(layer.strides, "strides", layer) != size or layer.padding != "valid":
                raise UnsupportedModel(f"layer {layer.name!r}: pools must have strides equal to their size "
                                       "and valid padding")
            x = b.pool(layer.name, x, size)
        elif kind == "Flatten":
            x = b.flatten(layer.name, x)
        else:
            if not layer.use_bias:
                raise UnsupportedModel(f"layer {layer.name!r}: dense layers without a bias are not supported")
            x = b.dense(layer.name, x, int(layer.units), _activation(layer))  # type: ignore[arg-type]
    last = b.layers[-1] if b.layers else None
    if last is None or last.kind != "dense":
        raise UnsupportedModel(f"model {model.name!r} must end in a Dense layer (its classes)")
    return b.workload(name or model.name, last.units, f"Keras model {model.name!r}")


def load(path: str, name: str | None = None):
    """(workload, Keras model) of a ``.keras`` file."""
    import keras

    model = keras.saving.load_model(path, compile=False)
    return from_keras(model, name), model
