"""mcdask: real-time DNN recognition split across a crowd of small devices, on Dask.

Layout, one job per module:
  plan        the plan: plain, versioned data the runtime reads
  weights     where a slice's weights come from (seed or a Keras weights file)
  slices      build a slice as a compiled TensorFlow function; merge shard outputs
  plugin      the worker plugin keeping slices resident, and the task that runs them
  runtime     deploy a plan on a Dask cluster; submit its pieces
  stream      one chain of tasks per frame, backpressure, results in order
  local       the same plan run in this process (the unsplit reference)
  sources     frame sources and per-workload preprocessing (optical flow)
"""

from .config import register_defaults as _register_defaults

_register_defaults()

__version__ = "0.1.0"
