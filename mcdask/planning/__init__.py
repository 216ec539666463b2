"""The cost model (``costmodel``, its per-piece facts in ``pieces``) and the planner
(``planner``): pure functions from a workload's layer facts and a profile to a plan, for every
device count; ``cli`` is ``mcdask plan``.

May import: ``mcdask.model``, ``mcdask.errors``, ``workloads``. No Dask, no TensorFlow, no
clock, no randomness.
"""
