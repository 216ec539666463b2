"""Workloads mcdask can split: AlexNet, VGG16 and two-stream action recognition.

``get(name)`` returns the plain-data description (layers, shapes, per-layer facts); building
Keras layers from it lives in ``mcdask.runtime.slices``. Importing this package is light: no
TensorFlow.
"""

from __future__ import annotations

from functools import cache

from .models import ACTION_WINDOWS, FLOW_STACK, action, alexnet, vgg16
from .spec import Layer, Workload, pyramid_ranges

_FACTORIES = {"alexnet": alexnet, "vgg16": vgg16, "action": action}
NAMES = tuple(_FACTORIES)


#: workloads made from users' models in this process (``register``)
_REGISTERED: dict[str, Workload] = {}


def get(name: str) -> Workload:
    """The workload called ``name``: built in (``NAMES``) or registered here."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    return _builtin(name)


@cache
def _builtin(name: str) -> Workload:
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(NAMES)}") from None


def register(workload: Workload) -> Workload:
    """Make a user's workload (``keras_model.from_keras``) known to ``get`` in this process."""
    if workload.name in _FACTORIES:
        raise ValueError(f"workload name {workload.name!r} is a built-in model's; name yours otherwise")
    _REGISTERED[workload.name] = workload
    return workload


def builtin(name: str) -> bool:
    return name in _FACTORIES


__all__ = ["NAMES", "get", "register", "builtin", "Layer", "Workload", "pyramid_ranges", "ACTION_WINDOWS",
           "FLOW_STACK"]
