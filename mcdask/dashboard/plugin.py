"""The dashboard's scheduler plugin: keeps the swarm's state in the scheduler and serves it.

Registered by ``mcdask.runtime.deploy.deploy`` on whatever scheduler the client reaches (a
stock ``dask scheduler``, no flag or preload needed). ``start`` registers the scheduler
handlers ``mcdask_publish`` (streams send their figures) and ``mcdask_state`` (``mcdask
status``), adds the ``/mcdask`` page routes to the running dashboard's Tornado application
(handlers can be added to it after start, unlike Bokeh apps), and refreshes the Prometheus
gauges once a second. Fixed name, idempotent: deploying again keeps the running copy and
its figures.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import SchedulerPlugin

from mcdask.dashboard import metrics
from mcdask.dashboard.publish import PUBLISH_HANDLER
from mcdask.dashboard.state import SwarmState, snapshot

PLUGIN_NAME = "mcdask-dashboard"
STATE_HANDLER = "mcdask_state"
PAGE_PATH = "/mcdask"
logger = logging.getLogger("mcdask.dashboard.plugin")


class SwarmDashboard(SchedulerPlugin):
    """Per-stream figures, deployment and device use, inside the scheduler."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self):
        self.swarm = SwarmState()
        self.scheduler = None
        self._callback = None

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    async def start(self, scheduler) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        scheduler.handlers[PUBLISH_HANDLER] = self.publish
        scheduler.handlers[STATE_HANDLER] = self.state
        add_page(scheduler)
        metrics.series()
        self._callback = PeriodicCallback(self._refresh, 1000)
        self._callback.start()

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

    def publish(self, figures: dict) -> str:
        """Handler: one stream's figures (``mcdask.dashboard.publish.Publisher``)."""
        previous = self.swarm.publish(figures)
        metrics.observe(figures, previous)
        return "OK"

    def state(self) -> dict:
        """Handler and page: the whole snapshot."""
        return snapshot(self.scheduler, self.swarm)

    def _refresh(self) -> None:
        try:
            metrics.refresh(self.state())
        except Exception:   # a gauge is never worth a scheduler traceback per second
            logger.debug("mcdask: refreshing the dashboard gauges failed", exc_info=True)


def current(scheduler) -> SwarmDashboard | None:
    plugin = scheduler.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, SwarmDashboard) else None


def add_page(scheduler) -> bool:
    """Add the ``/mcdask`` routes to the scheduler's dashboard, once; False without a dashboard."""
    app = getattr(scheduler, "http_application", None)
    if app is None:
        return False
    if getattr(app, "_mcdask_page", False):
        return True
    from mcdask.dashboard.page import routes

    app.add_handlers(r".*$", routes(scheduler))
    app._mcdask_page = True
    return True
