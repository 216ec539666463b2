"""Built-in device kinds, each derived from published numbers (sources inside each module).

``get(kind)`` returns a :class:`mcdask.profile.DeviceKind`; ``link_for(kind)`` the link model
the kind was measured with; ``python -m mcdask.devices pi3`` prints a kind as JSON.

* ``pi3``: Raspberry Pi 3 running TensorFlow 1.5 / Keras 2.1, the paper's farm (default).
* ``tx2-cpu``: Jetson TX2, CPU only, from the published whole-model times.
"""

from __future__ import annotations

from functools import cache

from ..errors import ProfileError
from ..profile import DeviceKind, LinkModel
from . import pi3 as _pi3
from . import tx2 as _tx2

_BUILDERS = {"pi3": _pi3.pi3, "tx2-cpu": _tx2.tx2_cpu}
KINDS = tuple(_BUILDERS)


@cache
def get(kind: str) -> DeviceKind:
    try:
        return _BUILDERS[kind]()
    except KeyError:
        raise ProfileError(f"unknown device kind {kind!r}; built in: {', '.join(KINDS)}; "
                           f"or pass a profile JSON file") from None


def link_for(kind: str) -> LinkModel:
    """The link model of the network the kind was measured on (all built-ins: the paper's Wi-Fi)."""
    get(kind)
    return _pi3.WIFI_2018


__all__ = ["KINDS", "get", "link_for"]
