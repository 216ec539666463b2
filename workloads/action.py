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
#: sliding windows of the temporal pyramid, in frames (paper: 15 spatial, 25 temporal)
WINDOWS = (15, 25)
#: optical-flow frame pairs stacked for the temporal stream
FLOW_STACK = 10
H, W = 12, 16


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
