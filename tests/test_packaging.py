"""Packaging: what a device installs (`pip install 'mcdask[device]'`) brings no plotting,
dashboard or video package, and the code a worker runs works without them.

A real install into a fresh venv took 5 min on the 2-core host, so the requirements are
resolved from the installed distributions' metadata (``importlib.metadata``) instead, and the
worker's code runs with those packages made unimportable.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: distributions only clients, schedulers and the bench need
NOT_ON_A_DEVICE = {"matplotlib", "bokeh", "av", "opencv-python-headless", "opencv-python", "prometheus-client"}


def required(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution ``name[extras]`` needs on this machine, itself included."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(name), extras)]
    while todo:
        dist, want = todo.pop()
        if (dist, want) in seen:
            continue
        seen.add((dist, want))
        try:
            reqs = requires(dist) or []
        except PackageNotFoundError:
            raise AssertionError(f"{dist} is required but not installed here") from None
        for text in reqs:
            req = Requirement(text)
            envs = [{"extra": e} for e in sorted(want)] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {dist for dist, _ in seen}


def test_a_device_needs_no_client_scheduler_or_bench_package():
    device = required("mcdask", frozenset({"device"}))
    assert {"mcdask", "distributed", "keras", "h5py", "lz4"} <= device
    assert device & NOT_ON_A_DEVICE == set()
    assert {"bokeh", "prometheus-client"} <= required("mcdask", frozenset({"scheduler"}))
    assert {"bokeh", "av", "opencv-python-headless"} <= required("mcdask", frozenset({"client"}))
    assert "matplotlib" in required("mcdask", frozenset({"bench"}))


#: a worker's code with the client packages made unimportable (Keras imports some if present)
WORKER = """
import sys

GONE = ("matplotlib", "bokeh", "av", "cv2", "prometheus_client")


class Gone:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in GONE:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, Gone())
import cluster.preload  # what a device's worker preloads
import mcdask.dashboard.plugin  # what the scheduler loads
from mcdask.runtime import plugin
from mcdask.runtime.slices import SliceSpec

print(sorted(m for m in ("rich", "tensorflow", "keras") if m in sys.modules))
built = plugin._build_all({"alexnet/0/0": SliceSpec("alexnet", 0, 2)})
piece = built["alexnet/0/0"]
print({name: a.shape[0] for name, a in piece(piece.example_feeds()).items()})
"""


def test_a_worker_builds_a_slice_without_client_packages(tmp_path):
    run = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    at_import, outputs = run.stdout.strip().splitlines()[-2:]
    assert at_import == "[]"   # neither rich nor TensorFlow at module level
    assert outputs == "{'pool1': 1}"


NO_TENSORFLOW = """
import sys


class Gone:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, Gone())
from mcdask.runtime import plugin
from mcdask.runtime.pieces import SliceSpec

try:
    plugin._build_all({"alexnet/0/0": SliceSpec("alexnet", 0, 2)})
except Exception as e:
    print(type(e).__name__, e)
from mcdask.profiling.worker import runtime_baseline_bytes

try:   # what `mcdask run` asks a worker that Dask may pause before it plans
    runtime_baseline_bytes("tensorflow")
except Exception as e:
    print(type(e).__name__, e)
from mcdask.profiling.worker import collect_facts

try:   # the first thing `mcdask profile` asks every worker
    collect_facts(None)
except Exception as e:
    print(type(e).__name__, e)
"""


def test_a_tensorflow_slice_on_a_device_without_tensorflow_says_what_to_do(tmp_path):
    """A device installed with ``mcdask[litert]`` given a tensorflow deployment: one line naming
    what is missing and the two ways out, which the deployment reports for that device."""
    run = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    line = ("this device has no TensorFlow for a tensorflow deployment (No module named 'tensorflow'); install "
            "mcdask[device] on it, or deploy with --backend litert")
    assert run.stdout.strip().splitlines() == [f"SliceNotLoadedError {line}", f"ImportError {line}",
                                                f"ImportError {line}"]
