"""One stream on a cluster, set up the one way both the ``mcdask`` command and the Python API
use: deploy the plan (unless already deployed), put a controller beside it when plans to move
between are given (musical chairs), publish its figures to the dashboard, name its tasks one
Dask span, and yield its records in frame order.

Imports ``distributed``; the dashboard publisher is imported when a session starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import workloads
from mcdask.model.plan import Plan
from mcdask.runtime.weights import WeightsSource
from mcdask.streaming.events import EventLog
from mcdask.streaming.records import Item, Record


class Session:
    """``Session(client, plan, weights, ...).records(items)``: the stream's records, in order.

    After (or while) it runs: ``deployment``, ``deploy_s``, ``stream`` (its current plan and
    depth), ``controller`` (None without ``plans``), ``events`` and ``span`` (the Dask span
    of its tasks, also the stream's id on the dashboard). With ``batch`` > 1 an item may stack
    that many frames (batch mode, ``mcdask.streaming.batch``; the dashboard counts batches)."""

    def __init__(self, client, plan: Plan, weights: WeightsSource = WeightsSource(), *, depth: int | None = None,
                 plans=None, events: EventLog | None = None, deployment=None, batch: int = 1):
        from mcdask.runtime.deploy import DaskRunner, deploy
        from mcdask.streaming.controller import Controller
        from mcdask.streaming.stream import Stream

        self.client, self.plan = client, plan
        t0 = time.perf_counter()
        self.deployment = deployment or deploy(client, plan, weights)
        self.deploy_s = time.perf_counter() - t0
        # event times count from the stream's start
        self.events = events or EventLog(clock=time.perf_counter)
        self.controller = Controller(client, self.deployment, plans, self.events) if plans is not None else None
        self.stream = Stream(DaskRunner(client, self.deployment), plan, workloads.get(plan.workload), depth,
                             supervisor=self.controller, events=self.events, batch=batch)
        self.span = ""

    def records(self, items: Iterable[Item]) -> Iterator[Record]:
        """Stream ``items`` (read as they are needed); one record per item, in frame order.
        Raises ``StreamStopped`` (after the records of every frame read) when the stream
        cannot go on."""
        from distributed import span

        from mcdask.dashboard.publish import Publisher

        pub = Publisher(self.client, self.plan.workload, plan_id=lambda: self.stream.plan.id,
                        events=self.events).start()
        self.span = f"mcdask {pub.id}"
        try:
            with span(self.span):   # the stream's tasks, one span in the dashboard's views
                for rec in self.stream.run(pub.reading(items)):
                    pub.record(rec)
                    yield rec
        finally:
            pub.close()
