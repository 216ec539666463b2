"""A user's own Keras model, not one of the three: converted to a workload, planned with a split
dense layer, deployed on a local cluster and streamed; its outputs equal Keras's own predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import workloads
from workloads.keras_model import UnsupportedModel, from_keras
from workloads.spec import Workload

BIN = Path(sys.executable).parent


def small_cnn(dense_units: int = 8192):
    """3 convs, 3 pools, 2 denses; the first dense is 75 MB of weights."""
    import keras
    from keras import layers

    inp = keras.Input((64, 64, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inp)
    x = layers.MaxPooling2D(2, name="p1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="c2")(x)
    x = layers.MaxPooling2D(2, name="p2")(x)
    x = layers.Conv2D(64, 5, strides=1, padding="valid", activation="relu", name="c3")(x)
    x = layers.MaxPooling2D(2, name="p3")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(dense_units, activation="relu", name="d1")(x)
    out = layers.Dense(10, activation="softmax", name="d2")(x)
    return keras.Model(inp, out, name="smallcnn")


def test_the_model_becomes_a_workload_and_back():
    w = from_keras(small_cnn(64))
    assert [l.kind for l in w.layers] == ["conv", "pool", "conv", "pool", "conv", "pool", "flatten", "dense", "dense"]
    assert w.layer("c3").output_shape == (12, 12, 64) and w.layer("flat").output_shape == (6 * 6 * 64,)
    assert w.inputs == {"frame": (64, 64, 3)} and w.classes == 10 and w.layer("d2").activation == "softmax"
    assert Workload.from_dict(json.loads(json.dumps(w.to_dict()))) == w


def test_a_layer_mcdask_cannot_split_is_named():
    import keras
    from keras import layers

    inp = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, name="c1")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Flatten()(x)
    m = keras.Model(inp, layers.Dense(4, name="out")(x))
    with pytest.raises(UnsupportedModel, match="layer 'bn' is a BatchNormalization"):
        from_keras(m)


def test_a_built_in_name_cannot_be_taken():
    w = from_keras(small_cnn(64), name="alexnet")
    with pytest.raises(ValueError, match="built-in"):
        workloads.register(w)


@pytest.mark.slow
def test_demo_splits_your_model_and_equals_keras_predict(tmp_path):
    path = tmp_path / "smallcnn.keras"
    model = small_cnn()
    model.save(path)
    r = subprocess.run([str(BIN / "mcdask"), "demo", "--model", str(path), "--devices", "3", "--frames", "8",
                        "--device-memory", "300MB", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["classified"] == 8 and summary["equal"] is True
    assert summary["keras"]["checked"] == 8 and summary["keras"]["equal"] is True
    split = [st for st in summary["plan"]["stages"] if len(st["shards"]) > 1]
    assert split, summary["plan"]          # the 75 MB dense layer does not fit a 300 MB device whole
    assert summary["workload"] == "smallcnn"
    # unsupported models get one line, no traceback
    bad = tmp_path / "bad.keras"
    import keras
    from keras import layers

    inp = keras.Input((32, 32, 3))
    keras.Model(inp, layers.Dense(4)(layers.GlobalAveragePooling2D(name="gap")(inp))).save(bad)
    r = subprocess.run([str(BIN / "mcdask"), "demo", "--model", str(bad)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "layer 'gap' is a GlobalAveragePooling2D" in r.stderr
    assert np.isfinite(summary["keras"]["max_abs_diff"])
