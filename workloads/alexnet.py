"""AlexNet as the paper runs it: single stream, a 220x220x3 input (Musical Chair Fig. 3a)."""

from __future__ import annotations

DESCRIPTION = "AlexNet, single stream, 220x220x3 (paper Fig. 3a)"
#: what each Keras input is: "image" (an RGB frame, uint8 scaled to [0, 1] on the devices)
ROLES = {"frame": "image"}
LABELS = "imagenet-1k"
#: frames reach its weights as x/255 (seeded, or a file in mcdask's layouts)
PREPROCESS = "scale"

#: published figures (sections of ../shared/reference/musical-chair-paper.md). ``pi3``: one
#: Raspberry Pi 3's time for the whole model (CK, §3.6), spread over the layers by
#: ``mcdask.model.kinds.pi3``; ``tx2_cpu_s``: the Jetson TX2's CPU time (CK, §3.6); ``systems``:
#: the rows the bench prints beside its own ("devices" excludes the paper's input-stream device).
PUBLISHED = {
    "pi3": {"groups": {"": (0.532 + 0.526 + 0.519) / 3}, "source": "CK reproduced results, §3.6"},
    "tx2_cpu_s": (0.2007 + 0.2010 + 0.2015) / 3,
    "systems": [
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
}


def keras_model():
    import keras
    from keras import layers as kl

    x = inp = keras.Input((220, 220, 3), name="frame")
    x = kl.Conv2D(48, 11, strides=4, padding="same", activation="relu", name="conv1")(x)     # 55x55x48
    x = kl.MaxPooling2D(2, name="pool1")(x)                                                  # 27
    x = kl.Conv2D(128, 5, padding="same", activation="relu", name="conv2")(x)
    x = kl.MaxPooling2D(2, name="pool2")(x)                                                  # 13
    for name, filters in (("conv3", 192), ("conv4", 192), ("conv5", 128)):
        x = kl.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)
    x = kl.MaxPooling2D(2, name="pool5")(x)                                                  # 6x6x128
    x = kl.Flatten(name="flatten")(x)                                                        # 4608
    x = kl.Dense(4096, activation="relu", name="fc1")(x)
    x = kl.Dense(4096, activation="relu", name="fc2")(x)
    x = kl.Dense(1000, activation="softmax", name="fc3")(x)
    return keras.Model(inp, x, name="alexnet")
