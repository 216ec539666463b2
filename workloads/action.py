"""Two-stream action recognition (Ryoo et al., RA-L; the paper's third workload), HMDB-51.

A spatial CNN on each RGB frame and a temporal CNN on each stack of optical flow (the last
``FLOW_STACK`` frame pairs' dx, dy), both at 16x12, give one 256-feature vector per frame; a
temporal pyramid (4 levels) pools the last 15 spatial and the last 25 temporal vectors; three
dense layers (8192, 8192, 51) classify. As a Keras model the two streams are
``TimeDistributed`` over a window of frames; mcdask runs them once per frame (data parallel)
and hands the pyramid each frame's window of their outputs.
"""

from __future__ import annotations

DESCRIPTION = "two-stream action recognition, 16x12, HMDB-51 (RA-L sec. III)"
#: "flow": a stack of FLOW_STACK optical-flow fields (dx, dy) of consecutive frames, computed
#: from the image input where the frames are read
ROLES = {"frame": "image", "flow": "flow"}
LABELS = "hmdb-51"
#: frames reach its weights as x/255 (seeded, or a file in mcdask's layouts)
PREPROCESS = "scale"
#: sliding windows of the temporal pyramid, in frames (paper: 15 spatial, 25 temporal)
WINDOWS = (15, 25)
#: optical-flow frame pairs stacked for the temporal stream
FLOW_STACK = 10
H, W = 12, 16

#: published figures (sections of ../shared/reference/musical-chair-paper.md); see alexnet.py.
#: ``pi3.groups``: one Pi 3's time for each stream and the pyramid (RA-L Fig. 10c, §3.1), each
#: spread over its layers; the dense layers outside them take the Pi's dense model.
PUBLISHED = {
    "pi3": {"groups": {"spatial_": 0.192, "temporal_": 0.199, "pyramid": 0.0052},
            "source": "RA-L Fig. 10c, §3.1"},
    "tx2_cpu_s": 0.51,
    "systems": [
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


def _stream(prefix: str, channels: int):
    import keras
    from keras import layers as kl

    return keras.Sequential([
        keras.Input((H, W, channels)),
        kl.Conv2D(256, 5, activation="relu", name=f"{prefix}_conv1"),                     # 8x12
        kl.Conv2D(256, 3, activation="relu", name=f"{prefix}_conv2"),                     # 6x10
        kl.Conv2D(256, 3, activation="relu", name=f"{prefix}_conv3"),                     # 4x8
        kl.Flatten(name=f"{prefix}_flatten"),                                             # 8192
        kl.Dense(256, activation="relu", name=f"{prefix}_fc"),
    ], name=prefix)


def keras_model():
    import keras
    from keras import layers as kl

    from .keras_layers import TemporalPyramid

    frames = keras.Input((WINDOWS[0], H, W, 3), name="frame")
    flows = keras.Input((WINDOWS[1], H, W, 2 * FLOW_STACK), name="flow")
    spatial = kl.TimeDistributed(_stream("spatial", 3), name="spatial")(frames)
    temporal = kl.TimeDistributed(_stream("temporal", 2 * FLOW_STACK), name="temporal")(flows)
    x = TemporalPyramid(4, name="pyramid")([spatial, temporal])                              # 2 x 15 x 256 = 7680
    x = kl.Dense(8192, activation="relu", name="fc1")(x)
    x = kl.Dense(8192, activation="relu", name="fc2")(x)
    x = kl.Dense(51, activation="softmax", name="fc3")(x)
    return keras.Model([frames, flows], x, name="action")
