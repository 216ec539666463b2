"""mcdask: real-time DNN recognition split across a crowd of small devices, on Dask.

Rooms (each package's docstring says what it holds and what it may import; imports run
model <- planning <- runtime <- streaming <- profiling <- commands, never back):
  model       plain data: plans, profiles, device kinds
  planning    the cost model and the planner (pure)
  runtime     weights, slices, the worker plugin, deploying a plan, the in-process reference
  streaming   sources, the stream, the controller (musical chairs), events
  profiling   measuring a running cluster into a profile
  api        the Python API: ``mcdask.stream``, ``astream``, ``classify``, ``plan``, ``deploy``, ``Result``
  commands, cli, config, errors, plans/   the ``mcdask`` command, settings, errors, paper plans

Words, used one way everywhere:
  layer      one entry of a workload (``workloads``): conv, pool, flatten, dense, pyramid
  stage      a run of layers ``[start, end)`` of a plan, half-open and zero-based
  shard      one part of a stage whose last (dense) layer is split by output units ``[a, b)``;
             a stage that is not split has one shard, ``units`` null
  piece      one (stage, shard) of a plan: what one task computes for one frame
  slice      a piece built on a device: weights resident, a compiled function
  replica    one of several devices holding the same piece (data parallelism)
  device     one worker, named by its stable worker name; a kind is what type of device
  plan       stages with their shards and devices (``mcdask.model.plan``)
  profile    device kinds, devices and links that the planner plans on
  deployment a plan bound to workers on a running cluster (``mcdask.runtime.deploy``)
  frame      one input (an image, with optical flow for the action model)
  event      a change while a stream runs: device lost/frozen/back/joined, plan switched

``import mcdask`` loads neither TensorFlow nor ``distributed``.
"""

from mcdask.config import register_defaults as _register_defaults

_register_defaults()

__version__ = "0.1.0"

#: the Python API (``mcdask.api``), loaded when first used
_API = ("stream", "astream", "classify", "plan", "deploy", "Result", "Prediction", "frames_of", "workload_of",
        "local_cluster")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from mcdask import api

        return getattr(api, name)
    raise AttributeError(f"module 'mcdask' has no attribute {name!r}")
