"""Running a plan's pieces: where weights come from (``weights``), a slice as a compiled
TensorFlow function (``slices``), the worker plugin that keeps slices resident and the task
that runs them (``plugin``), deploying a plan on a Dask cluster and submitting its pieces
(``deploy``), the same plan run in this process (``local``: the unsplit reference), and timing
a whole model (``timing``).

May import: ``mcdask.model``, ``mcdask.security``, ``mcdask.errors``, ``workloads``, Dask; TensorFlow only in
``slices`` (and what calls it lazily). It never decides a plan.
"""
