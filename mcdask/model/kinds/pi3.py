"""Raspberry Pi 3 Model B running Keras 2.1 / TensorFlow 1.5, as in the Musical Chair farm.

Every number below is published (section numbers of
``shared/reference/musical-chair-paper.md``) or derived from published numbers by a rule
stated here. Nothing is fitted to a throughput the paper reports.

Compute (seconds per frame, one Pi):

* **VGG16, every layer**: the published per-layer Pi times (§3.5, ``parallel-ml/fc``
  ``vgg16_layerwise_pi_time``: each layer alone, 50 predictions averaged).
* **Dense shards and unpublished dense layers** (memory-bound model): a dense layer's time is
  ``DENSE_FIXED_S + DENSE_S_PER_BYTE * weight bytes``, the straight line through the two VGG16
  dense layers that fit in memory: dense2 (4096->4096, 67.1 MB, 0.114 s) and dense3
  (4096->1000, 16.4 MB, 0.063 s). VGG16 dense1 (411 MB, 2.483 s) is *not* used: at 411 MB it
  does not fit a Pi's memory (JIOT 2020: "dense1 requires swap space"; the memory model below
  agrees), so its 6.0 ns/byte is a swapping rate; the planner never places a layer that does not
  fit. Using it would also give AlexNet's dense layers alone 0.96 s, above the published 0.52 s
  for the whole of AlexNet on one Pi.
* **AlexNet**: whole model 0.5257 s on one Pi (§3.6, CK: mean of 0.532, 0.526, 0.519 s). Dense
  layers take the dense model (fc2 and fc3 have exactly VGG16 dense2/dense3 shapes, so they get
  those measured times); the rest of the 0.5257 s is spread over the other layers in proportion
  to their FLOPs. (CK ran the 224x224 artifact; our AlexNet is the paper's 220x220 figure.)
* **Action recognition**: spatial stream 0.192 s and temporal stream 0.199 s (§3.1, Fig. 10c),
  spread the same way (stream dense layer by the dense model, the rest in proportion to FLOPs);
  temporal pyramid 0.0052 s (§3.1); fc1..fc3 by the dense model (their times are not published;
  cross-check: the dense model gives 0.33 s for the paper's "Dense (1/2)" layers, which were
  measured at 0.728 s, so these action fc times may be optimistic by about 2x).

Memory (RA-L Fig. 10, single-Pi memory of whole action tasks, fig-vector readings, GB taken as
1e9 bytes): spatial CNN 0.19 GB for 13.2 MB of weights, temporal CNN 0.19 GB for 13.6 MB,
"Dense (1/2)" 0.70 GB for 193.8 MB, full dense 1.54 GB for 521.8 MB. The least-squares line
through these four points gives ``BASELINE_BYTES`` (intercept: TensorFlow + Keras process) and
``WEIGHT_MEMORY_FACTOR`` (slope: framework bytes per float32 weight byte), computed below.
Usable memory: the Pi 3's 1 GiB minus the 64 MiB its firmware gives the GPU by default,
1,006,632,960 bytes (``MEMORY_BYTES``). The emulated farm caps its pi3 devices at the same figure
(``cluster.devices``): one number for planner, farm and bench.

The baseline and weight factor above are the paper's TensorFlow 1.5 Pis. What this project's
runtimes take (TensorFlow 2.21, LiteRT), measured, is in ``mcdask.model.runtimes``, which gives
this kind those figures for planning real deployments (``homogeneous("pi3", n, runtime=...)``).

Network (RA-L §VI): the lab Wi-Fi measured 62.24 Mbit/s between two Pis and 8.83 ms round
trip (``WIFI_MBIT``, ``WIFI_RTT_MS``). A message costs ``WIFI.latency_s`` (half the round trip)
plus its bytes at that rate; mcdask's own per-message cost is its runtime's, measured as
``task_overhead_s`` by ``mcdask profile``. The emulated farm shapes its links to these figures.
(The paper's own fit, ``t = 0.0002 s/kB * d + 0.002 s`` (§1.7), timed its framework's messages,
its software included; ``PAPER_MESSAGE_FIT`` keeps it for comparison.)
"""

from __future__ import annotations

import workloads
from mcdask.model.fit import line
from mcdask.model.profile import DeviceKind, LinkModel

#: the lab Wi-Fi between two Pis (RA-L §VI)
WIFI_MBIT = 62.24
WIFI_RTT_MS = 8.83
WIFI = LinkModel(latency_s=WIFI_RTT_MS / 2 / 1e3, bandwidth_Bps=WIFI_MBIT * 1e6 / 8)
#: the paper's fit to its framework's message times (§1.7): not the network alone
PAPER_MESSAGE_FIT = LinkModel(latency_s=0.002, bandwidth_Bps=1000 / 0.0002)

#: §3.5 per-layer Raspberry Pi 3 times for VGG16, seconds (kept with the model: workloads/vgg16.py)
VGG16_PI_S = workloads.published("vgg16")["pi3"]["layers"]

# memory-bound dense model through VGG16 dense2 and dense3 (§3.5)
_vgg = workloads.get("vgg16")
_b2, _b3 = _vgg.layer("fc2").param_bytes, _vgg.layer("fc3").param_bytes
DENSE_S_PER_BYTE = (VGG16_PI_S["fc2"] - VGG16_PI_S["fc3"]) / (_b2 - _b3)
DENSE_FIXED_S = VGG16_PI_S["fc3"] - DENSE_S_PER_BYTE * _b3
#: the swapping rate of VGG16 dense1 (documented, not used)
DENSE1_S_PER_BYTE = VGG16_PI_S["fc1"] / _vgg.layer("fc1").param_bytes

# memory model: (weight bytes, measured bytes) of RA-L Fig. 10 tasks
_action = workloads.get("action")


def _weights(names) -> int:
    return sum(_action.layer(n).param_bytes for n in names)


def _half_dense_bytes() -> int:
    """Weights of the paper's "Dense (1/2)": fc dims halved, 7680->4096->4096->51."""
    return 4 * ((7680 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 51)


MEMORY_POINTS = (
    (_weights([f"spatial_{x}" for x in ("conv1", "conv2", "conv3", "fc")]), 0.19e9),
    (_weights([f"temporal_{x}" for x in ("conv1", "conv2", "conv3", "fc")]), 0.19e9),
    (_half_dense_bytes(), 0.70e9),
    (_weights(["fc1", "fc2", "fc3"]), 1.54e9),
)


WEIGHT_MEMORY_FACTOR, _intercept = line(MEMORY_POINTS)
BASELINE_BYTES = round(_intercept)
MEMORY_BYTES = 2**30 - 64 * 2**20


def _dense_s(layer, per_byte: float = DENSE_S_PER_BYTE, fixed: float = DENSE_FIXED_S) -> float:
    return fixed + per_byte * layer.param_bytes


def _spread(layers, whole_s: float) -> dict[str, float]:
    """Dense layers by the dense model; ``whole_s`` minus those over the rest by FLOPs."""
    out = {l.name: _dense_s(l) for l in layers if l.kind == "dense"}
    rest = [l for l in layers if l.kind != "dense"]
    left = whole_s - sum(out.values())
    if left <= 0:
        raise ValueError(f"dense layers alone exceed the published {whole_s} s")
    flops = sum(l.flops for l in rest)
    out.update({l.name: left * l.flops / flops for l in rest})
    return {l.name: out[l.name] for l in layers}


def published_times(workload) -> dict[str, float]:
    """One Pi 3's time for each layer of a built-in ``workload``, from its published figures
    (``workloads.published``): per-layer times as published; else each group's published
    time (layers named with its prefix) spread over its layers by ``_spread``; any layer left
    (a dense layer outside the groups) by the dense model."""
    pub = workloads.published(workload.name)["pi3"]
    if "layers" in pub:
        return {l.name: pub["layers"][l.name] for l in workload.layers}
    out: dict[str, float] = {}
    for prefix, whole_s in pub["groups"].items():
        out.update(_spread([l for l in workload.layers if l.name.startswith(prefix) and l.name not in out], whole_s))
    rest = [l for l in workload.layers if l.name not in out]
    if any(l.kind != "dense" for l in rest):
        raise ValueError(f"{workload.name}: published Pi 3 times leave {[l.name for l in rest]} without a time")
    out.update({l.name: _dense_s(l) for l in rest})
    return {l.name: out[l.name] for l in workload.layers}


def layer_times() -> dict[str, dict[str, float]]:
    return {name: published_times(workloads.get(name)) for name in workloads.NAMES}


SOURCES = {
    "vgg16 layer times": ("published per-layer Pi 3 times, parallel-ml/fc models/stats/vgg16_layerwise_pi_time "
                          "(notes §3.5)"),
    "dense model": "line through VGG16 dense2 (0.114 s, 67.1 MB) and dense3 (0.063 s, 16.4 MB) (§3.5)",
    "alexnet layer times": "whole AlexNet 0.5257 s on one Pi (CK, §3.6): dense by the dense model, rest by FLOPs",
    "action layer times": "streams 0.192 / 0.199 s, pyramid 0.0052 s (RA-L Fig. 10c, §3.1): stream dense by the "
                          "dense model, rest by FLOPs; fc1..fc3 by the dense model",
    "memory": "least squares over RA-L Fig. 10 task memory (0.19, 0.19, 0.70, 1.54 GB) vs weight bytes (§3.1)",
    "memory_bytes": "1 GiB LPDDR2 (§4) minus the 64 MiB default GPU split",
    "link": "62.24 Mbit/s and 8.83 ms round trip between two Pis over the lab Wi-Fi (RA-L §VI)",
}


def pi3() -> DeviceKind:
    return DeviceKind(
        kind="pi3", memory_bytes=MEMORY_BYTES, baseline_bytes=BASELINE_BYTES, layer_time_s=layer_times(),
        weight_memory_factor=WEIGHT_MEMORY_FACTOR, dense_fixed_s=DENSE_FIXED_S,
        dense_s_per_weight_byte=DENSE_S_PER_BYTE, resources={"cpu_cores": 4, "cpu_ghz": 1.2},
        sources=SOURCES, note="Raspberry Pi 3 Model B, Keras 2.1 / TensorFlow 1.5 (see mcdask/model/kinds/pi3.py)")

