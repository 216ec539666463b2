"""Real weights, real labels: a weights file in Keras-applications' VGG16 layout (Keras 2 h5,
``predictions``, caffe preprocessing) loads as it is and gives Keras's own top-5; AlexNet
files in the documented layouts; the shipped label sets; preprocessing belongs to the weights.
Every file is built here; nothing is downloaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import items_for, random_plan

import workloads
from mcdask.errors import WeightsError
from mcdask.runtime.slices import prepare_input
from mcdask.runtime.weights import WeightsSource, keras2, layer_weights, preprocessing, save_by_name
from mcdask.streaming.records import Record
from mcdask.streaming.reference import run_local


def _random_weights(model, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """He-uniform kernels and small biases for every layer with weights; the last layer's
    kernel is shrunk so its softmax does not saturate (five distinct top scores)."""
    out = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        kernel, bias = (np.asarray(v) for v in layer.get_weights())
        limit = np.sqrt(6.0 / np.prod(kernel.shape[:-1])) * (0.02 if layer is model.layers[-1] else 1.0)
        k = rng.random(kernel.shape, dtype=np.float32)
        k *= np.float32(2 * limit)
        k -= np.float32(limit)
        out[layer.name] = [k, (rng.random(bias.shape, dtype=np.float32) * 0.1 - 0.05).astype(np.float32)]
    return out


def write_keras2_h5(path, model, weights: dict[str, list[np.ndarray]]) -> None:
    """``weights`` in the layout of Keras-applications' files (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``,
    what Keras 2's ``save_weights`` wrote): top-level ``layer_names`` (every layer, in order),
    one group per layer with ``weight_names``, datasets at ``NAME/NAME/kernel:0``."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([l.name.encode() for l in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            g = f.create_group(layer.name)
            arrays = weights.get(layer.name, [])
            names = [f"{layer.name}/{v}:0" for v in ("kernel", "bias")][:len(arrays)]
            g.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for n, a in zip(names, arrays):
                g.create_dataset(n, data=a)


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """(path, the Keras weights) of a Keras-applications VGG16 file with random weights."""
    import keras

    model = keras.applications.VGG16(weights=None)
    weights = _random_weights(model, np.random.default_rng(5))
    path = tmp_path_factory.mktemp("keras-apps") / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    write_keras2_h5(path, model, weights)
    del model
    return path, weights


def _top5(vec) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(vec).reshape(-1), kind="stable")[:5]]


@pytest.mark.slow
def test_keras_applications_vgg16_gives_keras_top5(vgg16_file):
    """The done-when of issue #15: the same top-5 through a split mcdask run as through
    ``keras.applications.VGG16(weights=file)`` with its own ``preprocess_input``."""
    import keras
    from keras.applications import vgg16

    path, _ = vgg16_file
    w = workloads.get("vgg16")
    src = WeightsSource(path=str(path)).check()
    items = items_for(w, 3, seed=11)
    plan = random_plan(w, np.random.default_rng(3), max_stages=4)
    assert any(len(s.shards) > 1 for s in plan.stages) or len(plan.stages) > 1, plan
    records = [r for r in run_local(plan, items, src) if r.status == "ok"]
    assert len(records) == 3

    model = keras.applications.VGG16(weights=str(path))      # Keras's own legacy-h5 loader
    frames = np.concatenate([it.inputs["frame"] for it in items])
    want = np.asarray(model.predict(vgg16.preprocess_input(frames.astype(np.float32)), verbose=0))
    for r, ref in zip(records, want):
        top = np.sort(ref)[::-1][:6]
        assert np.diff(top).min() < -1e-4, f"top scores too close to order: {top}"
        assert [c for c, _ in r.top5] == _top5(ref)
        np.testing.assert_allclose(r.output.reshape(-1), ref, rtol=1e-4, atol=1e-6)

    scaled = run_local(plan, items[:1], WeightsSource(path=str(path), preprocess="scale"))[0]
    assert np.abs(scaled.output.reshape(-1) - want[0]).max() > 1e-3, "x/255 must give other answers"


@pytest.mark.slow
def test_keras2_file_is_read_by_name_and_by_columns(vgg16_file):
    path, weights = vgg16_file
    w = workloads.get("vgg16")
    src = WeightsSource(path=str(path)).check()
    assert keras2(str(path)) and preprocessing(w, src) == "caffe"
    assert preprocessing(w, WeightsSource(path=str(path), preprocess="scale")) == "scale"
    assert preprocessing(w, WeightsSource()) == "scale"
    k, b = layer_weights(w.layer("fc3"), src, (100, 300), alias="predictions")
    np.testing.assert_array_equal(k, weights["predictions"][0][:, 100:300])
    np.testing.assert_array_equal(b, weights["predictions"][1][100:300])
    k, _ = layer_weights(w.layer("block3_conv2"), src)
    np.testing.assert_array_equal(k, weights["block3_conv2"][0])
    with pytest.raises(WeightsError, match="no weights for layer 'fc3'"):
        layer_weights(w.layer("fc3"), src)                   # without the alias
    with pytest.raises(WeightsError, match="choose one of scale, caffe"):
        WeightsSource(path=str(path), preprocess="tf").check()


def test_caffe_preprocessing_is_keras_applications():
    from keras.applications import vgg16

    x = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    got = prepare_input(x, "caffe")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, vgg16.preprocess_input(x.astype(np.float32)), rtol=0, atol=1e-4)
    np.testing.assert_allclose(prepare_input(x), x / 255, rtol=1e-6)


@pytest.mark.parametrize("layout", ["keras", "by-name"])
def test_alexnet_files_in_the_documented_layouts(tmp_path, layout):
    """AlexNet's weights as Keras 3 saves its workload model (``.weights.h5``) or keyed by mcdask's
    layer names (``save_by_name``): a split run gives the model's own answers on x/255."""
    w = workloads.get("alexnet")
    model = workloads.keras_model_of("alexnet")
    weights = _random_weights(model, np.random.default_rng(8))
    for layer in model.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
    path = tmp_path / "alexnet.weights.h5"
    if layout == "keras":
        model.save_weights(path)
    else:
        save_by_name(path, weights)
    src = WeightsSource(path=str(path)).check()
    assert not keras2(str(path)) and preprocessing(w, src) == "scale"
    items = items_for(w, 2, seed=4)
    records = [r for r in run_local(random_plan(w, np.random.default_rng(9)), items, src) if r.status == "ok"]
    frames = np.concatenate([it.inputs["frame"] for it in items])
    want = np.asarray(model.predict(frames.astype(np.float32) / 255, verbose=0))
    assert [[c for c, _ in r.top5] for r in records] == [_top5(v) for v in want]
    np.testing.assert_allclose(np.concatenate([r.output for r in records]), want, rtol=1e-4, atol=1e-6)


def test_label_sets_are_shipped_in_class_order():
    imagenet = workloads.labels("imagenet-1k")
    assert len(imagenet) == 1000 and len(set(imagenet)) == 998   # "crane" and "maillot" twice, as in Keras's
    assert (imagenet[0], imagenet[1], imagenet[999]) == ("tench", "goldfish", "toilet_tissue")
    assert workloads.labels("vgg16") == workloads.labels("alexnet") == imagenet
    hmdb = workloads.labels("action")
    assert len(hmdb) == 51 == workloads.get("action").classes
    assert hmdb == sorted(hmdb) and hmdb[0] == "brush_hair" and hmdb[-1] == "wave"
    with pytest.raises(ValueError, match="unknown label set 'coco'"):
        workloads.labels("coco")
    user = workloads.register(workloads.Workload("labelless", {"frame": (8, 8, 3)}, (), 10))
    assert workloads.labels(user.name) == []


def test_workloads_declare_preprocessing_and_labels():
    for name in workloads.NAMES:
        w = workloads.get(name)
        assert w.preprocess == "scale" and w.labels in ("imagenet-1k", "hmdb-51")
        assert len(workloads.labels(name)) == w.classes
    assert workloads.get("vgg16").keras_applications == {"names": {"fc3": "predictions"}, "preprocess": "caffe"}
    with pytest.raises(ValueError, match="preprocessing 'bgr'"):
        workloads.Workload("x", {"frame": (8, 8, 3)}, (), 10, preprocess="bgr")


def test_records_and_summary_name_the_classes():
    rec = Record(3, "ok", 0.1, top5=[(0, 0.5), (999, 0.25), (2, 0.1)])
    line = json.loads(json.dumps(rec.to_dict(workloads.labels("imagenet-1k"))))
    assert [(t["class"], t.get("label")) for t in line["top5"]] == [(0, "tench"), (999, "toilet_tissue"),
                                                                      (2, "great_white_shark")]
    assert "label" not in rec.to_dict()["top5"][0]
    assert WeightsSource(seed=4).describe() == "seeded (random, seed 4): answers are not meaningful"
    assert WeightsSource(path="/x/y.weights.h5").describe() == "/x/y.weights.h5"


@pytest.mark.slow
def test_keras_applications_file_on_stock_workers(vgg16_file, tmp_path):
    """``mcdask run --weights`` the Keras-applications file on stock `dask worker` processes:
    Keras's top-5, each class named in --out, the file named in the summary."""
    import subprocess

    import keras
    from keras.applications import vgg16
    from stock import BIN, StockCluster

    path, _ = vgg16_file
    cluster = StockCluster(tmp_path)
    cluster.start_scheduler()
    try:
        for i in range(3):
            cluster.start_plain_worker(f"worker{i}")
        cluster.wait_for(3)
        out = tmp_path / "out.jsonl"
        r = subprocess.run([str(BIN / "mcdask"), "run", "--scheduler", cluster.address, "--workload", "vgg16",
                            "--weights", str(path), "--frames", "4", "--out", str(out), "--check", "--json"],
                           capture_output=True, text=True, timeout=900)
    finally:
        assert not cluster.close(), "processes left behind"
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["equal"] is True and summary["weights"] == str(path.resolve())
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    items = items_for(workloads.get("vgg16"), 4, seed=0)       # what --source synthetic --seed 0 read
    frames = np.concatenate([it.inputs["frame"] for it in items]).astype(np.float32)
    want = keras.applications.VGG16(weights=str(path)).predict(vgg16.preprocess_input(frames), verbose=0)
    names = workloads.labels("imagenet-1k")
    assert [[t["class"] for t in x["top5"]] for x in lines] == [_top5(v) for v in want]
    assert all(t["label"] == names[t["class"]] for x in lines for t in x["top5"])
    assert summary["last"]["frame"] == 3 and summary["last"]["label"] == names[_top5(want[3])[0]]
