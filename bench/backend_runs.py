"""``mcdask bench --backend tensorflow --backend litert``: each backend measured by ``bench.run`` on a
farm of its own, one after the other, into one result; and which profile each plans on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import Settings


def check(backends: tuple[str, ...], profile: str | None, scheduler: str | None) -> None:
    """Refuse, before any farm comes up, a bench its farms cannot give: several backends on one
    farm that is already up, or the device profile on litert (``ValueError``, one line)."""
    import dask.config

    if len(backends) > 1 and scheduler is not None:
        raise ValueError("--scheduler names one farm, which runs one backend: leave it out to measure "
                         f"{' and '.join(backends)} (the bench brings up a farm for each)")
    if profile == "device" and any(default_profile(b) != "device"
                                   for b in backends or (dask.config.get("mcdask.worker.backend"),)):
        raise ValueError("--profile device times TensorFlow's pieces on the farm's devices, which a litert device "
                         "does not run (nor hold, beside its model, in 1 GiB): plan litert on --profile farm, or "
                         "measure --backend tensorflow alone")


def default_profile(backend: str) -> str:
    """The profile a bench of ``backend`` plans on unless told: ``device`` (each piece timed on the
    farm's devices) for tensorflow; ``farm`` for litert, since the device profile times
    TensorFlow's pieces, which a litert device neither runs nor holds beside its model."""
    return "device" if backend == "tensorflow" else "farm"


def run_backends(settings: Settings, backends: tuple[str, ...] = (), scheduler: str | None = None,
                 log=print) -> dict:
    """``run`` once per device runtime in ``backends`` (none: the configured one), each on a
    farm of its own brought up for it (a farm puts one runtime's threads under its devices'
    compute quotas), one after the other: one result whose rows carry their ``backend``, the
    runs' settings merged (``backends``) and each farm's status under ``farms``."""
    from mcdask.options import using_backend

    from .run import run

    check(backends, settings.profile, scheduler)
    results = []
    for b in backends or (None,):
        with using_backend(b):
            results.append(run(settings, scheduler=scheduler, log=log))
    return merge(results)


def merge(results: list[dict]) -> dict:
    """One result of ``run``'s results on different backends (``run_backends``)."""
    merged = dict(results[0])
    runtimes = [r["settings"]["backend"] for r in results]
    if len(set(runtimes)) < len(runtimes):
        raise ValueError(f"results of one backend twice: {', '.join(runtimes)}")
    merged["settings"] = {**results[0]["settings"], "backend": "+".join(runtimes), "backends": runtimes,
                          "profiles": {r["settings"]["backend"]: r["settings"]["profile"] for r in results}}
    merged["farms"] = {r["settings"]["backend"]: r["farm"] for r in results}
    merged["rows"] = [row for r in results for row in r["rows"]]
    merged["wall_s"] = sum(r["wall_s"] for r in results)
    return merged
