"""AlexNet as the paper runs it: single stream, a 220x220x3 input (Musical Chair Fig. 3a)."""

from __future__ import annotations

DESCRIPTION = "AlexNet, single stream, 220x220x3 (paper Fig. 3a)"
#: what each Keras input is: "image" (an RGB frame, uint8 scaled to [0, 1] on the devices)
ROLES = {"frame": "image"}
LABELS = "imagenet-1k"


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
