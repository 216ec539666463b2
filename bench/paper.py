"""Published reference rows the bench prints beside its own measurements.

Every number is from ../shared/reference/musical-chair-paper.md, section 3, with its source:
ReQuEST@ASPLOS'18 Fig. 5/6 (AlexNet/VGG16 bars), RA-L/IROS'18 Figs. 12-14 (action
recognition, printed labels), CK reproduced results (single Pi AlexNet). Device counts: the
paper counts the input-stream device; mcdask's client is the source, so ``devices`` here is
the paper's count minus one (``paper_devices`` keeps theirs).
"""

from __future__ import annotations

#: workload -> list of rows: system, devices (ours), paper_devices, ips, energy J/inference
#: (static, dynamic, total; None where unpublished), source
REFERENCE: dict[str, list[dict]] = {
    "alexnet": [
        {"system": "Jetson TX2 (GPU)", "devices": 1, "ips": 7.14, "static_j": 0.80, "dynamic_j": 0.74,
         "total_j": 1.54, "source": "ReQuEST'18 Fig. 5"},
        {"system": "Jetson TX2 (CPU)", "devices": 1, "ips": 5.55, "static_j": 1.02, "dynamic_j": 0.43,
         "total_j": 1.46, "source": "ReQuEST'18 Fig. 5"},
        {"system": "1 Raspberry Pi 3", "devices": 1, "ips": 1.92, "static_j": None, "dynamic_j": None,
         "total_j": None, "source": "CK reproduced results, 0.519-0.532 s per inference"},
        {"system": "Pi farm, 5-device", "devices": 4, "paper_devices": 5, "ips": 4.35, "static_j": 1.49,
         "dynamic_j": 0.80, "total_j": 2.30, "source": "ReQuEST'18 Fig. 5"},
        {"system": "Pi farm, 6-device", "devices": 5, "paper_devices": 6, "ips": 5.71, "static_j": 1.75,
         "dynamic_j": 0.35, "total_j": 2.10, "source": "ReQuEST'18 Fig. 5"},
    ],
    "vgg16": [
        {"system": "Jetson TX2 (GPU)", "devices": 1, "ips": 1.28, "static_j": 4.5, "dynamic_j": 4.1,
         "total_j": 8.6, "source": "ReQuEST'18 Fig. 6"},
        {"system": "Jetson TX2 (CPU)", "devices": 1, "ips": 0.52, "static_j": 11.0, "dynamic_j": 7.3,
         "total_j": 18.4, "source": "ReQuEST'18 Fig. 6"},
        {"system": "Pi farm, 9-device", "devices": 8, "paper_devices": 9, "ips": 0.48, "static_j": 26.3,
         "dynamic_j": 13.7, "total_j": 40.0, "source": "ReQuEST'18 Fig. 6"},
        {"system": "Pi farm, 11-device", "devices": 10, "paper_devices": 11, "ips": 1.11, "static_j": 16.6,
         "dynamic_j": 10.4, "total_j": 27.0, "source": "ReQuEST'18 Fig. 6"},
    ],
    "action": [
        {"system": "Jetson TX2 (GPU)", "devices": 1, "ips": 5.34, "static_j": 0.94, "dynamic_j": 1.12,
         "total_j": 2.06, "source": "RA-L'18 Figs. 12-14"},
        {"system": "Jetson TX2 (CPU)", "devices": 1, "ips": 1.97, "static_j": 2.54, "dynamic_j": 1.27,
         "total_j": 3.81, "source": "RA-L'18 Figs. 12-14"},
        {"system": "1 Raspberry Pi 3 (reloading)", "devices": 1, "ips": 0.02, "static_j": 198.90,
         "dynamic_j": 40.80, "total_j": 239.7, "source": "RA-L'18 Figs. 12-14"},
        {"system": "Pi farm, 5 robots", "devices": 4, "paper_devices": 5, "ips": 1.67, "static_j": 5.22,
         "dynamic_j": 1.38, "total_j": 6.6, "source": "RA-L'18 Figs. 12-14"},
        {"system": "Pi farm, 8 robots", "devices": 7, "paper_devices": 8, "ips": 7.69, "static_j": 1.62,
         "dynamic_j": 0.72, "total_j": 2.34, "source": "RA-L'18 Figs. 12-14 (static from bar geometry)"},
        {"system": "Pi farm, 10 robots", "devices": 9, "paper_devices": 10, "ips": 9.09, "static_j": 1.93,
         "dynamic_j": 0.61, "total_j": 2.53, "source": "RA-L'18 Figs. 12-14"},
        {"system": "Pi farm, 12 robots", "devices": 11, "paper_devices": 12, "ips": 10.00, "static_j": 2.10,
         "dynamic_j": 0.55, "total_j": 2.65, "source": "RA-L'18 Figs. 12-14"},
    ],
}

#: Raspberry Pi 3 power (ReQuEST Table 1 / RA-L Table II): idle without power gating, 100 % load
PI3_IDLE_W = 1.3
PI3_FULL_W = 6.5


def reference(workload: str, system: str) -> dict:
    """The published row of ``system`` (e.g. "Jetson TX2 (GPU)") for ``workload``."""
    return next(r for r in REFERENCE[workload] if r["system"] == system)
