"""Keep TensorFlow, absl, oneDNN and OpenCV quiet: ``quiet()``, called before TensorFlow or
OpenCV is imported (the worker plugin, the profiler's and the farm's TensorFlow set-up, the
``mcdask`` command). Their start-up banners and retracing notes go; Python exceptions do not.

``MCDASK_VERBOSE=1`` in the environment (``mcdask -v`` sets it, and the workers of a local
cluster inherit it) lets everything through; a level the user set in the environment wins.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator

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
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == _ENV["TF_CPP_MIN_LOG_LEVEL"] and "tensorflow" not in sys.modules \
            and not any(isinstance(f, _MutedImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _MutedImport())


class _MutedImport(importlib.abc.MetaPathFinder):
    """Imports ``tensorflow`` with this process's standard error (file descriptor 2) pointed at
    ``/dev/null``. On CPUs where TensorFlow turns oneDNN on by default (AVX512-VNNI or -BF16,
    AMX), TensorFlow 2.21's import logs "oneDNN custom operations are on" through absl, twice,
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says. A failed import still raises, after the descriptor
    is back."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)          # once: the real finder's spec, with its loader wrapped
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _MutedLoader(spec.loader)
        return spec


class _MutedLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with stderr_muted():
            self.loader.exec_module(module)


@contextlib.contextmanager
def stderr_muted() -> Iterator[None]:
    """This process's standard error (file descriptor 2, which native libraries write to)
    pointed at ``/dev/null`` while the block runs, unless ``MCDASK_VERBOSE`` is set. For native
    calls that log what ``quiet`` cannot reach: TensorFlow's import (``_MutedImport``), and
    LiteRT's first XNNPACK allocation, which prints "Created TensorFlow Lite XNNPACK delegate for
    CPU." once per process whatever the log levels (``mcdask.runtime.litert``). Other threads'
    writes to fd 2 in that time go too; Python exceptions do not."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def let_through() -> None:
    """``mcdask -v``: this process and every worker it starts keep the libraries' logs."""
    os.environ[VERBOSE_ENV] = "1"
