"""Shared host helpers of the farm: the name prefix of everything it makes, running a command
(``sh``) or a Python tool that prints one JSON line (``run_json``), polling until something
happens (``wait_until``), and the capability probe that decides between the emulated farm and
the uncapped local fallback (``probe``).

Every object the farm makes on this host is named with the prefix ``mcd`` (bridge
``mcdask-br0``, namespaces ``mcd-<device>``, TAPs ``mcdh<i>``/``mcdn<i>``, cgroups
``mcdask-farm/<device>``), so cleaning by name never touches anything else. The network is
``cluster.network``, the cgroups ``cluster.cgroups``, the processes ``cluster.processes``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from .cgroups import Cgroups
from .errors import FarmError

PREFIX = "mcd"


def sh(*args: str, check: bool = True, netns: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command (inside ``netns`` if given); raise ``FarmError`` with its stderr on failure."""
    cmd = list(args)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise FarmError(f"command not found: {cmd[0]!r}; install iproute2 (ip, tc)") from None
    if check and p.returncode != 0:
        raise FarmError(f"`{' '.join(cmd)}` failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def run_json(cmd: list[str], *, timeout_s: float = 600, env: dict[str, str] | None = None,
             cgroup: str | None = None) -> dict:
    """Run ``cmd`` (a Python tool that ends with one JSON line; in the cgroup directory
    ``cgroup`` if given) and return that object; raise ``FarmError`` with its stderr if it
    fails, times out or prints none. TensorFlow in it is quiet and CPU-only."""
    shown = " ".join(["python", *cmd[1:]] if cmd and cmd[0] == sys.executable else cmd)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                           preexec_fn=_join_cgroup(cgroup) if cgroup else None)
    except subprocess.TimeoutExpired:
        raise FarmError(f"`{shown}` took over {timeout_s:.0f} s") from None
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    try:
        if p.returncode != 0:
            raise ValueError
        out = json.loads(lines[-1])
        if not isinstance(out, dict):
            raise ValueError
    except (IndexError, ValueError):
        raise FarmError(f"`{shown}` printed no JSON line (exit {p.returncode}); stderr: "
                        f"{p.stderr.strip()[-800:]}") from None
    return out


def _join_cgroup(cgroup: str):
    def preexec() -> None:  # runs in the child between fork and exec
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    return preexec


def wait_until(done, timeout_s: float, what: str, poll_s: float = 0.02) -> float:
    """Poll ``done()`` until it is true; returns the seconds it took. After ``timeout_s``
    raise ``FarmError`` naming ``what`` was waited for."""
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > timeout_s:
            raise FarmError(f"waited {timeout_s:g} s for {what}; it did not happen")
        time.sleep(poll_s)
    return time.monotonic() - t0


# --------------------------------------------------------------------------- capability probe

def probe() -> str | None:
    """``None`` if this process can build the emulated farm, else the reason it cannot.
    ``MCDASK_FARM_FORCE_LOCAL=1`` forces the uncapped local fallback (for tests)."""
    if os.environ.get("MCDASK_FARM_FORCE_LOCAL", "") not in ("", "0"):
        return "MCDASK_FARM_FORCE_LOCAL is set"
    if os.geteuid() != 0:
        return "not running as root (network namespaces, tc and cgroups need root)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' (iproute2) is not installed"
    name = f"{PREFIX}-probe-{os.getpid()}"
    p = sh("ip", "netns", "add", name, check=False)
    if p.returncode != 0:
        return f"cannot create a network namespace: {p.stderr.strip()}"
    sh("ip", "netns", "del", name, check=False)
    try:
        Cgroups.detect()
    except FarmError as e:
        return str(e)
    return None
