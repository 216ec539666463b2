"""Published reference rows the bench prints beside its own measurements.

Every number is from ../shared/reference/musical-chair-paper.md, section 3, with its source:
ReQuEST@ASPLOS'18 Fig. 5/6 (AlexNet/VGG16 bars), RA-L/IROS'18 Figs. 12-14 (action
recognition, printed labels), CK reproduced results (single Pi AlexNet). Device counts: the
paper counts the input-stream device; mcdask's client is the source, so ``devices`` here is
the paper's count minus one (``paper_devices`` keeps theirs).
"""

from __future__ import annotations

import workloads

#: workload -> list of rows: system, devices (ours), paper_devices, ips, energy J/inference
#: (static, dynamic, total; None where unpublished), source. Kept with each model
#: (``PUBLISHED["systems"]`` in workloads/NAME.py).
REFERENCE: dict[str, list[dict]] = {name: workloads.published(name)["systems"] for name in workloads.NAMES}

#: Raspberry Pi 3 power (ReQuEST Table 1 / RA-L Table II): idle without power gating, 100 % load
PI3_IDLE_W = 1.3
PI3_FULL_W = 6.5


def reference(workload: str, system: str) -> dict:
    """The published row of ``system`` (e.g. "Jetson TX2 (GPU)") for ``workload``."""
    return next(r for r in REFERENCE[workload] if r["system"] == system)
