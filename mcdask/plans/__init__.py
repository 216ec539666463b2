"""The paper's hand-made task assignments as plan files (``<workload>-<N>dev.json``).

``N`` is the paper's device count, which includes its input device A; mcdask's client is the
frame source, so each plan has N - 1 devices (each file's ``note`` says how it was mapped).
Each file also carries ``"paper": {"measured_ips", "source"}``, which ``Plan`` ignores.
"""

from __future__ import annotations

import json
from importlib import resources

from mcdask.errors import PlanError
from mcdask.model.plan import Plan


def names() -> list[str]:
    """Names of the packaged plans, sorted."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".json"))


def raw(name: str) -> dict:
    """The plan file as a dict (including the ``paper`` block)."""
    if name not in names():
        raise PlanError(f"no packaged plan {name!r}; available: {', '.join(names())}")
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())


def load(name: str) -> Plan:
    return Plan.from_dict(raw(name))


def resolve(spec: str) -> Plan:
    """A plan from a plan file or a packaged plan's name (``names()``)."""
    from pathlib import Path

    if Path(spec).exists() or spec.endswith(".json"):
        return Plan.load(spec)
    if spec in names():
        return load(spec)
    raise PlanError(f"plan {spec!r} is neither a plan file nor a packaged plan ({', '.join(names())})")


def measured_ips(name: str) -> float | None:
    """The IPS the paper measured for this plan's system, if any."""
    return raw(name).get("paper", {}).get("measured_ips")
