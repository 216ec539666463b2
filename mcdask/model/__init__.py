"""Plain data: plans (``plan``), device and link profiles (``profile``, its links in
``links``) and the built-in device kinds (``kinds``). Versioned JSON that people can read and write.

May import: ``mcdask.errors`` and ``workloads``. Never Dask, never TensorFlow, nothing else of
mcdask: every other room reads this one.
"""
