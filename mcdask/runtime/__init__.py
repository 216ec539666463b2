"""Running a plan's pieces: where weights come from (``weights``), what a slice is and the NumPy
that feeds it (``pieces``), a slice as a compiled TensorFlow function (``slices``, the
tensorflow backend) or as a LiteRT interpreter (``litert``, the litert backend, on the process's
one ``model_thread``; ``convert`` makes its flatbuffers on the client, ``flatcache`` keeps them on
a device's disk), the worker plugin that keeps slices resident and the task that runs them
(``plugin``), deploying a plan on
a Dask cluster and submitting its pieces (``deploy``), the same plan run in this process
(``local``: the unsplit reference), and timing a whole model (``timing``).

May import: ``mcdask.model``, ``mcdask.security``, ``mcdask.errors``, ``workloads``, Dask; TensorFlow only in
``slices`` (and what calls it lazily: ``convert`` on the client), LiteRT only in ``litert``. It never
decides a plan.
"""
