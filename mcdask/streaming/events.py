"""What happened to a stream's devices and plan, as it happened.

Every change the controller or the stream makes (a device lost, frozen, back or joined; a
plan switched; frames resubmitted or dropped; the stream stopped) is one ``Event``: a line on
the ``mcdask.events`` logger (stderr, for people) and an entry in ``EventLog.events`` (for the
run's JSON summary and the dashboard). Times are seconds since the log began, on the client.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("mcdask.events")

#: the kinds of event, said once
KINDS = ("lost", "frozen", "back", "joined", "left", "switched", "no-plan", "resubmitted", "dropped",
         "stopped")


@dataclass(frozen=True)
class Event:
    t_s: float                       # seconds since the log began
    kind: str                        # one of KINDS
    message: str                     # one line for people
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"t_s": round(self.t_s, 3), "kind": self.kind, "message": self.message, **self.data}


class EventLog:
    """Thread-safe, append-only; ``bound`` keeps memory flat on endless streams (the count of
    each kind stays exact)."""

    def __init__(self, bound: int = 10_000, clock=time.monotonic):
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._bound = bound
        self.events: list[Event] = []
        self.counts: dict[str, int] = {}

    def emit(self, kind: str, message: str, **data) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(KINDS)}")
        ev = Event(self._clock() - self._t0, kind, message, data)
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if len(self.events) < self._bound:
                self.events.append(ev)
        logger.warning("mcdask: %s", message)
        return ev

    @property
    def origin(self) -> float:
        """The clock reading event times count from."""
        return self._t0

    def since_start_s(self) -> float:
        return self._clock() - self._t0

    def to_list(self) -> list[dict]:
        with self._lock:
            return [e.to_dict() for e in self.events]
