"""The farm's processes: those it started (marked by ``MCDASK_FARM_MEMBER`` in their
environment), killing them, and whether a pid is alive, stopped, or still the process that
was started (its start time guards against pid reuse).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MEMBER_ENV = "MCDASK_FARM_MEMBER"


def marked_pids() -> list[int]:
    """Processes started by the farm, found by the ``MCDASK_FARM_MEMBER`` variable in their
    environment (works when the state file is gone)."""
    pids = []
    me = os.getpid()
    needle = MEMBER_ENV.encode() + b"="
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(part.startswith(needle) for part in env.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def kill_pids(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM (and SIGCONT, for a device stopped by ``farm freeze``), then SIGKILL after
    ``grace_s``; returns the pids that were alive."""
    live = [p for p in sorted(set(pids)) if p != os.getpid() and alive(p)]
    for p in live:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in live):
        time.sleep(0.1)
    for p in live:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in live):
        time.sleep(0.05)
    return live


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``R``, ``S``, ``D``, ``T`` stopped, ``Z``, ...), or
    ``None`` when there is no such process."""
    try:
        return _stat_fields(pid)[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own children
    except ChildProcessError:
        pass
    return process_state(pid) not in (None, "Z", "X")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (guards against pid reuse)."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state first); raises
    ``OSError`` without such a process."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
