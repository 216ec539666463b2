"""VGG16 (Simonyan and Zisserman), 224x224x3, with Keras-applications' layer names for the
convolutions (``block1_conv1`` ...) and the paper's ``fc1``..``fc3`` for the classifier."""

from __future__ import annotations

DESCRIPTION = "VGG16, 224x224x3, flatten 25088"
ROLES = {"frame": "image"}
LABELS = "imagenet-1k"
#: its seeded weights (and files in mcdask's layouts) read frames as x/255
PREPROCESS = "scale"
#: Keras-applications' VGG16 weights file (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``, a Keras 2
#: h5 file) names the last layer ``predictions`` and was trained on caffe-style input; a file in
#: that layout is read as it is and its frames are preprocessed that way
KERAS_APPLICATIONS = {"names": {"fc3": "predictions"}, "preprocess": "caffe"}

#: published figures (sections of ../shared/reference/musical-chair-paper.md); see alexnet.py.
#: ``pi3.layers``: each layer alone on one Pi 3, 50 predictions averaged (§3.5,
#: parallel-ml/fc ``vgg16_layerwise_pi_time``); fc1 (411 MB) swapped on the Pi ("swapped").
PUBLISHED = {
    "pi3": {"layers": {
        "block1_conv1": 0.247, "block1_conv2": 1.249, "block1_pool": 0.207,
        "block2_conv1": 0.501, "block2_conv2": 0.931, "block2_pool": 0.099,
        "block3_conv1": 0.404, "block3_conv2": 0.765, "block3_conv3": 0.764, "block3_pool": 0.060,
        "block4_conv1": 0.373, "block4_conv2": 0.701, "block4_conv3": 0.699, "block4_pool": 0.039,
        "block5_conv1": 0.215, "block5_conv2": 0.218, "block5_conv3": 0.218, "block5_pool": 0.013,
        "flatten": 0.006, "fc1": 2.483, "fc2": 0.114, "fc3": 0.063,
    }, "swapped": ["fc1"], "source": "vgg16_layerwise_pi_time, §3.5"},
    "tx2_cpu_s": (1.928 + 1.926 + 1.928) / 3,
    "systems": [
        {"system": "Jetson TX2 (GPU)", "devices": 1, "ips": 1.28, "static_j": 4.5, "dynamic_j": 4.1,
         "total_j": 8.6, "source": "ReQuEST'18 Fig. 6"},
        {"system": "Jetson TX2 (CPU)", "devices": 1, "ips": 0.52, "static_j": 11.0, "dynamic_j": 7.3,
         "total_j": 18.4, "source": "ReQuEST'18 Fig. 6"},
        {"system": "Pi farm, 9-device", "devices": 8, "paper_devices": 9, "ips": 0.48, "static_j": 26.3,
         "dynamic_j": 13.7, "total_j": 40.0, "source": "ReQuEST'18 Fig. 6"},
        {"system": "Pi farm, 11-device", "devices": 10, "paper_devices": 11, "ips": 1.11, "static_j": 16.6,
         "dynamic_j": 10.4, "total_j": 27.0, "source": "ReQuEST'18 Fig. 6"},
    ],
}


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
