"""Give freed heap memory back to the OS in long-lived processes: glibc's trim threshold.

glibc keeps freed memory at the top of its heap for reuse until it exceeds a trim threshold,
and raises that threshold each time a large block is freed (up to 64 MiB). A stream frees
activations of several MB per frame, so a client or scheduler that once freed a frame holds
tens of MB it no longer uses, and grows in steps that look like a leak. Dask's nanny starts
its workers with ``MALLOC_TRIM_THRESHOLD_=65536`` for this reason
(``distributed.nanny.pre-spawn-environ``); a stock ``dask scheduler``, a ``dask worker
--no-nanny`` and the ``mcdask`` client have no nanny. ``trim_freed_memory`` sets the same
threshold in the running process (``mallopt``), and the ``mcdask`` command, the scheduler's and
the workers' history plugins (``mcdask.runtime.history``) call it. A threshold the user set in
the environment is left alone; on a C library other than glibc nothing happens.
"""

from __future__ import annotations

import ctypes
import os

ENV = "MALLOC_TRIM_THRESHOLD_"
THRESHOLD = 65536          # bytes: the value Dask's nanny gives its workers
_M_TRIM_THRESHOLD = -1     # mallopt's parameter number (malloc.h)


def trim_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Set glibc's trim threshold in this process; True if it was set."""
    if ENV in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):   # not glibc
        return False
