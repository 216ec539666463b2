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


def two_stream(frames: int = 4, flows: int = 6):
    """A small two-input model: per-frame streams (TimeDistributed) pooled by a pyramid."""
    import keras
    from keras import layers

    from workloads.keras_layers import TemporalPyramid

    def stream(prefix, channels):
        return keras.Sequential([keras.Input((8, 8, channels)),
                                 layers.Conv2D(4, 3, activation="relu", name=f"{prefix}_c"),
                                 layers.Flatten(name=f"{prefix}_f"),
                                 layers.Dense(6, activation="relu", name=f"{prefix}_d")])

    a, b = keras.Input((frames, 8, 8, 3), name="rgb"), keras.Input((flows, 8, 8, 4), name="motion")
    x = TemporalPyramid(2, name="tp")([layers.TimeDistributed(stream("s", 3))(a),
                                       layers.TimeDistributed(stream("t", 4))(b)])
    return keras.Model([a, b], layers.Dense(5, activation="softmax", name="out")(x), name="twostream")


def test_per_frame_streams_and_their_windows_become_a_windowed_pyramid():
    w = from_keras(two_stream(), roles={"rgb": "image", "motion": "flow"})
    assert w.inputs == {"rgb": (8, 8, 3), "motion": (8, 8, 4)} and w.roles == {"rgb": "image", "motion": "flow"}
    assert [l.name for l in w.layers] == ["s_c", "s_f", "s_d", "t_c", "t_f", "t_d", "tp", "out"]
    tp = w.layer("tp")
    assert tp.inputs == ("s_d", "t_d") and tp.window == (4, 6) and tp.output_shape == (3 * 12,)
    assert w.layer("s_c").inputs == ("rgb",) and w.image_input == "rgb" and w.flow_stack == 2
    assert w.cut_required(w.index["tp"]) and w.max_window == 6


def test_a_windowed_user_model_split_at_random_equals_keras_predict():
    """Random plans (replicated streams, split dense layers) of a two-input windowed model, run
    in-process, against Keras's own predict on each frame's windows."""
    from helpers import items_for, random_plan

    from mcdask.runtime import local
    from mcdask.streaming.reference import against_keras, run_local, with_weights

    model = two_stream()
    w = workloads.register(from_keras(model, roles={"rgb": "image", "motion": "flow"}))
    items = items_for(w, 14)
    with_weights(model, w)
    rng = np.random.default_rng(7)
    for _ in range(4):
        plan = random_plan(w, rng).validate(w)
        local._CACHE.clear()
        records = run_local(plan, items)
        # flow needs 2 frame pairs, the pyramid 6 flows: frames 7.. are answered
        assert [r.frame for r in records if r.status == "ok"] == list(range(7, 14)), plan.to_json()
        check = against_keras(model, w, items, records)
        assert check["checked"] == 7 and check["equal"], (check, plan.to_json())


@pytest.mark.parametrize("change, message", [
    ("no roles", "a model without input roles must take one RGB image"),
    ("dense on a window", "reads a window of 4 frames; wrap per-frame layers in TimeDistributed"),
])
def test_windowed_models_mcdask_cannot_take_are_named(change, message):
    import keras
    from keras import layers

    if change == "no roles":
        model = two_stream()
    else:
        a = keras.Input((4, 8, 8, 3), name="rgb")
        model = keras.Model(a, layers.Dense(3, name="d")(layers.TimeDistributed(layers.Flatten())(a)))
    with pytest.raises(UnsupportedModel, match=message):
        from_keras(model, roles=None if change == "no roles" else {"rgb": "image"})


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
                        "--device-memory", "150MB", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["classified"] == 8 and summary["equal"] is True
    assert summary["keras"]["checked"] == 8 and summary["keras"]["equal"] is True
    split = [st for st in summary["plan"]["stages"] if len(st["shards"]) > 1]
    # the 75 MB dense layer does not fit a 150 MB device whole (litert, the default: 80 MB baseline +
    # 1.15x its weights)
    assert split, summary["plan"]
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
