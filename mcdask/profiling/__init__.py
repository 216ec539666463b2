"""Measuring a running cluster into a profile: each worker's layer and shard times, memory and
task overhead, and the links between workers (``measure``); ``cli`` is ``mcdask profile``.

May import: ``mcdask.model``, ``mcdask.planning``, ``mcdask.runtime``, ``mcdask.streaming``
(to time a real stream), Dask; TensorFlow only inside functions that run on workers.
"""

from collections.abc import Callable

#: where profiling says what it is doing (one line at a time)
Progress = Callable[[str], None]
