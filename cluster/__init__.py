"""Where mcdask's devices come from: an emulated IoT farm on one machine, or real devices.

``mcdask farm up`` (``cluster.cli``) starts a Dask scheduler on this host and one stock
``dask worker`` per emulated device, each in its own network namespace behind a shaped
link (TAP pair + delay line), with a cgroup CPU quota and memory limit (``cluster.farm``). Device kinds and farm
specs are plain data (``cluster.devices``). ``README.md`` in this directory is the recipe for
real Raspberry Pis. Importing this package is light: no TensorFlow, no Dask.
"""

from .devices import KINDS, DeviceKind, FarmSpec, load_spec

__all__ = ["KINDS", "DeviceKind", "FarmSpec", "load_spec"]
