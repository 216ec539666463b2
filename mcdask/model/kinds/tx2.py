"""NVIDIA Jetson TX2, CPU only (``CUDA_VISIBLE_DEVICES=``), Keras 2.1 / TensorFlow 1.5.

Published whole-model times (section numbers of ``shared/reference/musical-chair-paper.md``):
AlexNet 0.2011 s (§3.6 CK: 0.2007, 0.2010, 0.2015 s), VGG16 1.9273 s (§3.6 CK: 1.928,
1.926, 1.928 s), action recognition 0.51 s per frame (§3.1, RA-L Figs. 12-14, TX2 CPU).

Rule: a workload's published time is spread over its layers in proportion to the ``pi3``
in-memory layer times (pi3's published or derived times, with VGG16 fc1 taken from pi3's dense
model since the TX2 has the memory to run it without swapping). Dense shards scale linearly in
units (rule 3 of ``mcdask.model.profile``).

Memory: 8 GB LPDDR4 (§4), shared with the GPU and the OS; we assume 1 GB for Ubuntu/JetPack
and use 7e9 bytes. Baseline and weight factor: pi3's TensorFlow 1.5 memory model (assumed alike
on ARM64). Network: the paper's Wi-Fi, as for pi3.
"""

from __future__ import annotations

import workloads
from mcdask.model.kinds import pi3 as _pi3
from mcdask.model.profile import DeviceKind

#: published TX2 CPU time per frame of each built-in workload (kept with the models)
WHOLE_S = {name: workloads.published(name)["tx2_cpu_s"] for name in workloads.NAMES}


#: 8 GB LPDDR4 (§4) less an assumed 1 GB for the OS; the farm's tx2-cpu devices get the same
MEMORY_BYTES = 7_000_000_000


def _pi3_in_memory(workload: str) -> dict[str, float]:
    """pi3's layer times, with layers whose published Pi time swapped ("swapped") taken from
    the dense model instead: the TX2 holds them in memory."""
    times = dict(_pi3.layer_times()[workload])
    for name in workloads.published(workload)["pi3"].get("swapped", []):
        times[name] = _pi3._dense_s(workloads.get(workload).layer(name))
    return times


def tx2_cpu() -> DeviceKind:
    layer_time_s = {}
    for name, whole in WHOLE_S.items():
        ref = _pi3_in_memory(name)
        scale = whole / sum(ref.values())
        layer_time_s[name] = {l: t * scale for l, t in ref.items()}
    return DeviceKind(
        kind="tx2-cpu", memory_bytes=MEMORY_BYTES, baseline_bytes=_pi3.BASELINE_BYTES, layer_time_s=layer_time_s,
        weight_memory_factor=_pi3.WEIGHT_MEMORY_FACTOR, resources={"cpu_cores": 6, "cpu_ghz": 2.0},
        sources={"layer times": "whole-model TX2 CPU times (CK §3.6; RA-L Fig. 12 for action) spread in "
                                "proportion to pi3 in-memory layer times",
                 "memory": "8 GB LPDDR4 (§4) minus an assumed 1 GB for the OS; pi3's memory model",
                 "link": "the paper's Wi-Fi (§1.7)"},
        note="Jetson TX2 CPU only (see mcdask/model/kinds/tx2.py)")
