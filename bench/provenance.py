"""Where a result came from, and where it goes.

Every result file the bench writes carries ``provenance``: the command line, the git commit
(and whether the work tree had changes), the machine (CPU model, cores, memory, kernel), the
versions of Python, TensorFlow and Dask, and when it ran. ``results_dir`` is where result
files go: the folder given (``--out-dir``), else ``bench/results`` when the working directory
is an mcdask checkout (the project's canonical results live there), else the working
directory; never the installed package's folder. ``result_name`` keeps the canonical
full-run files (``bench``, ``churn``, ``faults-x4``) for full runs only: a partial run gets a
name of its own unless one is given, and is refused the canonical name.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
#: the checkout's results folder, relative to the checkout
CHECKOUT_RESULTS = Path("bench", "results")
#: the help text of every --out-dir
OUT_DIR_HELP = "where the result files go [default: bench/results in an mcdask checkout, else the working directory]"


def results_dir(out_dir: Path | None = None) -> Path:
    """Where result files go (see the module docstring)."""
    if out_dir is not None:
        return out_dir
    here = Path.cwd()
    if (here / CHECKOUT_RESULTS).is_dir() and (here / "mcdask" / "mcdask.yaml").is_file():
        return here / CHECKOUT_RESULTS
    return here


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(settings: dict | None = None) -> dict:
    """What produced a result (see the module docstring); ``settings`` are the run's own."""
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": " ".join(shlex.quote(a) for a in ["mcdask" if sys.argv[0].endswith("mcdask") else
                                                      f"python -m {Path(sys.argv[0]).stem}", *sys.argv[1:]]),
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(dirty) if dirty is not None else None,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total,
                    "kernel": platform.release(), "python": platform.python_version()},
        "versions": {p: _version(p) for p in ("mcdask", "tensorflow-cpu", "tensorflow", "dask", "distributed")
                     if _version(p)},
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **({"settings": settings} if settings else {}),
    }


class PartialRunError(ValueError):
    """A partial run asked for a full run's file name."""


def result_name(canonical: str, full: bool, name: str | None, partial_name: str) -> str:
    """The file stem to write: ``name`` if given (refused if it is ``canonical`` and the run is
    partial), else ``canonical`` for a full run and ``partial_name`` otherwise."""
    if name == canonical and not full:
        raise PartialRunError(f"--name {canonical} is the full run's; this run is partial (it would overwrite "
                         f"bench/results/{canonical}.*): choose another name")
    return name or (canonical if full else partial_name)
