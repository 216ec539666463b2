"""The one thread of this process that runs LiteRT's kernels.

LiteRT computes on the thread that calls ``invoke``. Every litert slice of a process runs its
``invoke``, and the tensor copies around it, here (``run``), one call at a time: a LiteRT
interpreter is not safe to call from two threads at once, and the model's work becomes one
thread that the system can see and account for. It is named ``mcdask-model`` in the kernel
(``top -H``, ``ps -L``, py-spy). ``on_start`` hooks get its thread id when it starts: the emulated
farm puts it under the device's compute quota, as it does TensorFlow's ``tf_*`` threads
(``cluster.preload``).

Imports only the standard library.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

NAME = "mcdask-model"
T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_tid: int | None = None
_hooks: list[Callable[[int], Any]] = []


def _named() -> int:
    tid = threading.get_native_id()
    try:  # the kernel's name of this thread (Python 3.11 names only its own Thread objects)
        Path(f"/proc/self/task/{tid}/comm").write_text(NAME)
    except OSError:  # not Linux
        pass
    return tid


def thread_id() -> int:
    """The model thread's kernel id, starting it (and running the hooks) if it has not started."""
    global _pool, _tid
    with _lock:
        if _pool is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=NAME)
            tid = pool.submit(_named).result()
            try:
                for hook in _hooks:
                    hook(tid)
            except BaseException:
                pool.shutdown(wait=False)  # the next call starts another
                raise
            _pool, _tid = pool, tid
        assert _tid is not None, "set with the pool"
        return _tid


def on_start(hook: Callable[[int], Any]) -> None:
    """Call ``hook(thread_id)`` when the model thread starts (now, if it has started); an error
    it raises is the starter's."""
    with _lock:
        _hooks.append(hook)
        started = _tid
    if started is not None:
        hook(started)


def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the model thread; its result or its exception."""
    if _pool is None:
        thread_id()
    assert _pool is not None, "started by thread_id"
    return _pool.submit(fn, *args).result()
