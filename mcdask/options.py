"""Options every ``mcdask`` command spells the same way: ``-s/--scheduler`` (default: Dask's
own ``scheduler-address`` setting), ``-w/--workload``, ``-n/--devices``, ``-o/--out``.
Imports click and dask.config only."""

from __future__ import annotations

import click

import workloads


def _scheduler(ctx, param, value: str | None) -> str:
    import dask.config

    value = value or dask.config.get("scheduler-address", None)
    if not value:
        raise click.BadParameter("no scheduler: give --scheduler tcp://HOST:8786, or set Dask's scheduler-address "
                                 "(DASK_SCHEDULER_ADDRESS)", ctx, param)
    return value


def scheduler(f):
    """``-s/--scheduler ADDRESS``, Dask's ``scheduler-address`` when not given."""
    return click.option("-s", "--scheduler", default=None, callback=_scheduler,
                        help="address of a running Dask scheduler, e.g. tcp://host:8786 "
                             "[default: Dask's scheduler-address setting]")(f)


def workload(default: str | None = None, **kw):
    """``-w/--workload NAME``: a built-in model."""
    return click.option("-w", "--workload", type=click.Choice(workloads.NAMES), default=default,
                        show_default=default is not None, help=kw.pop("help", "a built-in model"), **kw)


def devices(default: int | None, help: str):
    """``-n/--devices N``."""
    return click.option("-n", "--devices", type=click.IntRange(1, 64), default=default,
                        show_default=default is not None, help=help)


def backend(f):
    """``--backend tensorflow|litert``: how the devices run their slices, for this command
    [default: ``mcdask.worker.backend``]."""
    return click.option("--backend", type=click.Choice(["tensorflow", "litert"]), default=None,
                        help="how the devices run their slices: TensorFlow, or LiteRT flatbuffers the client "
                             "converts and sends (no TensorFlow on the devices) [default: mcdask.worker.backend]")(f)


def using_backend(backend: str | None):
    """A ``dask.config.set`` context in which ``--backend`` (when given) is
    ``mcdask.worker.backend``: every deployment of the command, its controller's too, uses it."""
    import dask.config

    return dask.config.set({"mcdask.worker.backend": backend} if backend else {})
