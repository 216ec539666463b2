"""VGG16 (Simonyan and Zisserman), 224x224x3, with Keras-applications' layer names for the
convolutions (``block1_conv1`` ...) and the paper's ``fc1``..``fc3`` for the classifier."""

from __future__ import annotations

DESCRIPTION = "VGG16, 224x224x3, flatten 25088"
ROLES = {"frame": "image"}
LABELS = "imagenet-1k"


def keras_model():
    import keras
    from keras import layers as kl

    x = inp = keras.Input((224, 224, 3), name="frame")
    for block, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for c in range(1, convs + 1):
            x = kl.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{c}")(x)
        x = kl.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = kl.Flatten(name="flatten")(x)                                                        # 25088
    x = kl.Dense(4096, activation="relu", name="fc1")(x)
    x = kl.Dense(4096, activation="relu", name="fc2")(x)
    x = kl.Dense(1000, activation="softmax", name="fc3")(x)
    return keras.Model(inp, x, name="vgg16")
