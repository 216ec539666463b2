"""The farm's state file: everything a farm made, written after every change.

``farm up`` creates it, ``farm add``/``remove`` change its device list, ``farm down`` deletes
it. Commands that change the device list hold ``State.locked`` so that two of them at once
cannot overwrite each other's records; the fault commands only read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import FarmError

STATE_VERSION = 1


def state_dir() -> Path:
    """``$MCDASK_FARM_DIR``, else ``/run/mcdask-farm`` as root, else a per-user temp dir."""
    if os.environ.get("MCDASK_FARM_DIR"):
        return Path(os.environ["MCDASK_FARM_DIR"])
    if os.geteuid() == 0:
        return Path("/run/mcdask-farm")
    return Path(tempfile.gettempdir()) / f"mcdask-farm-{os.geteuid()}"


class State:
    """The farm's state file: what exists, written after every change (atomic rename)."""

    def __init__(self, directory: Path, data: dict):
        self.dir = directory
        self.data = data

    @property
    def path(self) -> Path:
        return self.dir / "state.json"

    @classmethod
    def load(cls, directory: Path | None = None) -> State | None:
        d = directory or state_dir()
        try:
            return cls(d, json.loads((d / "state.json").read_text()))
        except (OSError, ValueError):
            return None

    @classmethod
    def running(cls) -> State:
        """The state of a farm that is up; ``FarmError`` saying why otherwise."""
        state = cls.load()
        if state is None:
            raise FarmError(f"no farm is up (no {state_dir() / 'state.json'}); run `mcdask farm up` first")
        if state.data.get("phase") != "up":
            raise FarmError(f"the farm is not up (phase {state.data.get('phase')!r}); wait for `mcdask farm up` "
                            "to finish, or run `mcdask farm down`")
        return state

    @classmethod
    @contextlib.contextmanager
    def locked(cls, what: str, timeout_s: float = 600) -> Iterator[State]:
        """The running farm's state, held exclusively (``flock``) for a command that changes
        the device list; waits up to ``timeout_s`` for another such command to finish."""
        cls.running()
        lock = state_dir() / "devices.lock"
        with open(lock, "a+") as fh:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        fh.seek(0)
                        raise FarmError(f"waited {timeout_s:.0f} s for another farm command to release {lock} "
                                        f"(held by {fh.read().strip() or 'an unknown process'})") from None
                    time.sleep(0.2)
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}: {what}")
            fh.flush()
            try:
                yield cls.running()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)

    def made(self, what: str, item) -> None:
        self.data["resources"].setdefault(what, []).append(item)
        self.save()

    def device(self, name: str) -> dict:
        """The record of device ``name``; ``FarmError`` listing the known devices otherwise."""
        for rec in self.data["devices"]:
            if rec["name"] == name:
                return rec
        known = ", ".join(r["name"] for r in self.data["devices"]) or "none"
        removed = {r["name"]: r for r in self.data.get("removed", [])}
        if name in removed:
            raise FarmError(f"device {name!r} was removed from the farm at {removed[name]['removed_at']}; "
                            f"devices: {known}")
        raise FarmError(f"no device {name!r} in this farm; devices: {known}")
