"""Workloads mcdask can split: AlexNet, VGG16 and two-stream action recognition, and any
Keras model a user brings (``keras_model.from_keras``, then ``register``).

Each built-in model is one file here (``alexnet.py`` ...) that defines its Keras model and its
metadata (description, input roles, label set). Its plain-data description (layers, shapes,
per-layer facts) is read from that Keras model by ``keras_model.from_keras`` and kept in
``facts/NAME.json``, so that ``get(name)`` needs no TensorFlow; ``python -m workloads``
rewrites those files and a test checks they equal what the Keras models give. Building Keras
layers from the facts lives in ``mcdask.runtime.slices``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from functools import cache
from pathlib import Path

from .action import FLOW_STACK
from .action import WINDOWS as ACTION_WINDOWS
from .spec import Layer, Workload, pyramid_ranges

NAMES = ("alexnet", "vgg16", "action")
FACTS = Path(__file__).with_name("facts")
LABELS = Path(__file__).with_name("labels")

#: workloads made from users' models in this process (``register``)
_REGISTERED: dict[str, Workload] = {}


def get(name: str) -> Workload:
    """The workload called ``name``: built in (``NAMES``) or registered here."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    return _builtin(name)


def _module(name: str):
    if name not in NAMES:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


@cache
def _builtin(name: str) -> Workload:
    _module(name)
    return Workload.from_dict(json.loads((FACTS / f"{name}.json").read_text()))


def published(name: str) -> dict:
    """A built-in workload's published figures (its module's ``PUBLISHED``: Pi 3 and TX2 times,
    the paper's systems); empty for a user's model."""
    return _module(name).PUBLISHED if name in NAMES else {}


def keras_model_of(name: str):
    """A built-in workload's Keras model (imports Keras), with Keras's own initial weights."""
    return _module(name).keras_model()


def derive(name: str) -> Workload:
    """A built-in workload read from its Keras model (what ``facts/NAME.json`` holds)."""
    m = _module(name)
    from .keras_model import from_keras

    w = from_keras(m.keras_model(), name, roles=m.ROLES, description=m.DESCRIPTION)
    return dataclasses.replace(w, preprocess=m.PREPROCESS, labels=m.LABELS,
                               keras_applications=getattr(m, "KERAS_APPLICATIONS", {}))


@cache
def _label_set(name: str) -> tuple[str, ...]:
    path = LABELS / f"{name}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in LABELS.glob("*.txt")))
        raise ValueError(f"unknown label set {name!r}; shipped: {known}")
    lines = [l for l in path.read_text().splitlines() if l and not l.startswith("#")]
    return tuple(l.split("\t")[-1] for l in lines)


def labels(name: str) -> list[str]:
    """Class names in class-index order: of label set ``name`` ("imagenet-1k", "hmdb-51", shipped
    in ``labels/``), or of the workload called ``name`` (empty if it has no label set, as a
    user's model unless its workload names one)."""
    if name in _REGISTERED or name in NAMES:
        w = get(name)
        return list(_label_set(w.labels)) if w.labels else []
    return list(_label_set(name))


def register(workload: Workload) -> Workload:
    """Make a user's workload (``keras_model.from_keras``) known to ``get`` in this process."""
    if workload.name in NAMES:
        raise ValueError(f"workload name {workload.name!r} is a built-in model's; name yours otherwise")
    _REGISTERED[workload.name] = workload
    return workload


def builtin(name: str) -> bool:
    return name in NAMES


__all__ = ["NAMES", "get", "register", "builtin", "keras_model_of", "derive", "published", "Layer", "Workload",
           "pyramid_ranges", "labels", "ACTION_WINDOWS", "FLOW_STACK"]
