"""Frames through a deployment: frame sources and preprocessing (``sources``), one chain of
tasks per frame with results in order (``stream``), the controller that moves the deployment
as devices leave, freeze and join (``controller``), and what happened, as events (``events``).

May import: ``mcdask.model``, ``mcdask.planning`` (the controller asks the planner),
``mcdask.runtime``, ``mcdask.errors``, ``workloads``, Dask. TensorFlow never at import time.
"""
