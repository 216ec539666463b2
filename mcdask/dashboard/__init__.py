"""Seeing the swarm: what the scheduler knows about a running deployment, shown to people.

``plugin`` is a scheduler plugin (registered by ``mcdask.runtime.deploy.deploy``) that keeps,
inside the scheduler, the current deployment, the figures every stream publishes and each
device's utilisation; ``state`` assembles those into one JSON-able snapshot; ``page`` serves it
as the ``/mcdask`` dashboard page (HTML, BokehJS from the local bokeh package, plots built with
bokeh); ``metrics`` exports it as Prometheus series on the scheduler's ``/metrics``;
``publish`` is the client side, a bounded background publisher a stream feeds; ``status_cli``
is ``mcdask status``.

May import: ``mcdask.model``, ``mcdask.runtime`` (names only: the metadata key),
``mcdask.errors``, ``workloads``, Dask, bokeh, tornado, prometheus_client, rich. Never
``mcdask.streaming`` (the stream feeds the publisher, not the other way) nor TensorFlow.
"""
