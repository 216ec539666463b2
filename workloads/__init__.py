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


@cache
def get(name: str) -> Workload:
    """The workload called ``name`` (one of ``NAMES``)."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(NAMES)}") from None


__all__ = ["NAMES", "get", "Layer", "Workload", "pyramid_ranges", "ACTION_WINDOWS", "FLOW_STACK"]
