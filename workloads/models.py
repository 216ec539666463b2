"""The three workloads of the Musical Chair paper, with the paper's shapes.

Sources: ../shared/reference/musical-chair-paper.md section 2 (AlexNet single-stream with a
220x220x3 input, standard VGG16, the two-stream action-recognition model of Ryoo et al.).
"""

from __future__ import annotations

from .spec import Builder, Workload


def alexnet() -> Workload:
    b = Builder({"frame": (220, 220, 3)})
    x = b.conv("conv1", "frame", 48, 11, strides=4)          # 55x55x48
    x = b.pool("pool1", x)                                     # 27
    x = b.conv("conv2", x, 128, 5)
    x = b.pool("pool2", x)                                     # 13
    x = b.conv("conv3", x, 192, 3)
    x = b.conv("conv4", x, 192, 3)
    x = b.conv("conv5", x, 128, 3)
    x = b.pool("pool5", x)                                     # 6x6x128
    x = b.flatten("flatten", x)                                # 4608
    x = b.dense("fc1", x, 4096)
    x = b.dense("fc2", x, 4096)
    b.dense("fc3", x, 1000, activation="softmax")
    return b.workload("alexnet", 1000, "AlexNet, single stream, 220x220x3 (paper Fig. 3a)")


def vgg16() -> Workload:
    b = Builder({"frame": (224, 224, 3)})
    x = "frame"
    for block, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for c in range(1, convs + 1):
            x = b.conv(f"block{block}_conv{c}", x, filters, 3)
        x = b.pool(f"block{block}_pool", x)
    x = b.flatten("flatten", x)                                # 25088
    x = b.dense("fc1", x, 4096)
    x = b.dense("fc2", x, 4096)
    b.dense("fc3", x, 1000, activation="softmax")
    return b.workload("vgg16", 1000, "VGG16, 224x224x3, flatten 25088")


#: sliding windows of the temporal pyramid, in frames (paper: 15 spatial, 25 temporal)
ACTION_WINDOWS = (15, 25)
#: optical-flow frames stacked for the temporal stream (10 frames of dx, dy)
FLOW_STACK = 10


def action() -> Workload:
    b = Builder({"frame": (12, 16, 3), "flow": (12, 16, 2 * FLOW_STACK)})
    feats = []
    for prefix, src in (("spatial", "frame"), ("temporal", "flow")):
        x = b.conv(f"{prefix}_conv1", src, 256, 5, padding="valid")   # 8x12
        x = b.conv(f"{prefix}_conv2", x, 256, 3, padding="valid")     # 6x10
        x = b.conv(f"{prefix}_conv3", x, 256, 3, padding="valid")     # 4x8
        x = b.flatten(f"{prefix}_flatten", x)                          # 8192
        feats.append(b.dense(f"{prefix}_fc", x, 256))
    x = b.pyramid("pyramid", tuple(feats), ACTION_WINDOWS, levels=4)   # 2 x 15 x 256 = 7680
    x = b.dense("fc1", x, 8192)
    x = b.dense("fc2", x, 8192)
    b.dense("fc3", x, 51, activation="softmax")
    return b.workload("action", 51, "two-stream action recognition, 16x12, HMDB-51 (RA-L sec. III)")
