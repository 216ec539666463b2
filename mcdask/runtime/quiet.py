"""Keep TensorFlow, absl, oneDNN and OpenCV quiet: ``quiet()``, called before TensorFlow or
OpenCV is imported (the worker plugin, the profiler's and the farm's TensorFlow set-up, the
``mcdask`` command). Their start-up banners and retracing notes go; Python exceptions do not.

``MCDASK_VERBOSE=1`` in the environment (``mcdask -v`` sets it, and the workers of a local
cluster inherit it) lets everything through; a level the user set in the environment wins.
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "MCDASK_VERBOSE"

#: environment read by the native libraries when they load
_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's and absl's C++ log: oneDNN, CPU-feature, CUDA-probe banners
    "OPENCV_LOG_LEVEL": "ERROR",  # OpenCV's own log (video back-end probing)
}
#: Python loggers that print warnings nobody using mcdask can act on (retracing, absl notes)
_LOGGERS = ("tensorflow", "absl", "keras")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet() -> None:
    """Silence the libraries' chatter, unless ``MCDASK_VERBOSE`` is set. Idempotent."""
    if verbose():
        return
    for name, value in _ENV.items():
        os.environ.setdefault(name, value)
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def let_through() -> None:
    """``mcdask -v``: this process and every worker it starts keep the libraries' logs."""
    os.environ[VERBOSE_ENV] = "1"
