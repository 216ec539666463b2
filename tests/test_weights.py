"""Weights: seeded and identical everywhere, sliceable by columns, or read from a user's file."""

import tracemalloc

import numpy as np
import pytest

import workloads
from mcdask.errors import WeightsError
from mcdask.runtime.slices import Slice, SliceSpec, build_model
from mcdask.runtime.weights import WeightsSource, layer_weights


def test_seeded_shards_are_columns_of_the_whole_layer():
    fc1 = workloads.get("alexnet").layer("fc1")
    k, b = layer_weights(fc1, WeightsSource(7))
    for a, z in [(0, 1), (100, 700), (255, 257), (4000, 4096)]:
        ks, bs = layer_weights(fc1, WeightsSource(7), (a, z))
        np.testing.assert_array_equal(ks, k[:, a:z])
        np.testing.assert_array_equal(bs, b[a:z])
    k2, _ = layer_weights(fc1, WeightsSource(8))
    assert np.abs(k - k2).max() > 0.01, "another seed must give other weights"


def test_building_a_shard_costs_memory_of_the_shard_not_the_layer():
    fc1 = workloads.get("vgg16").layer("fc1")            # 25088 x 4096: 411 MB whole
    tracemalloc.start()
    layer_weights(fc1, WeightsSource(), (0, 256))         # 1/16 of the columns
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    shard = fc1.shard_param_bytes(256)
    assert peak < 2.5 * shard, f"peak {peak} bytes for a {shard}-byte shard"
    assert peak < fc1.param_bytes / 6


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """A user's AlexNet weights, made here: random, unlike mcdask's seeded ones."""
    import keras

    w = workloads.get("alexnet")
    model = build_model(w, set_weights=False)
    rng = np.random.default_rng(42)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([(rng.standard_normal(x.shape) * 0.02).astype(np.float32) for x in ws])
    d = tmp_path_factory.mktemp("weights")
    h5 = d / "alexnet.weights.h5"
    model.save_weights(h5)
    full = d / "alexnet.keras"
    model.save(full)
    x = rng.integers(0, 255, (2, 220, 220, 3)).astype(np.float32) / 255
    expect = keras.ops.convert_to_numpy(model(x, training=False))
    return h5, full, x, expect


@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_slices_from_a_weights_file_equal_the_keras_model(weights_files, kind):
    h5, full, x, expect = weights_files
    src = WeightsSource(path=str(h5 if kind == "h5" else full)).check()
    a = Slice(SliceSpec("alexnet", 0, 10, (0, 1000), src))
    b = Slice(SliceSpec("alexnet", 0, 10, (1000, 4096), src))
    c = Slice(SliceSpec("alexnet", 10, 12, None, src))
    fc1 = np.concatenate([a({"frame": x})["fc1"], b({"frame": x})["fc1"]], axis=-1)
    out = c({"fc1": fc1})["fc3"]
    assert np.abs(out - expect).max() <= 1e-5 * np.abs(expect).max()
    seeded = Slice(SliceSpec("alexnet", 0, 12))({"frame": x})["fc3"]
    assert np.abs(seeded - expect).max() > 1e-3, "file weights must actually be used"


def test_weights_file_errors(tmp_path, weights_files):
    with pytest.raises(WeightsError, match="does not exist"):
        WeightsSource(path=str(tmp_path / "nope.weights.h5")).check()
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"x")
    with pytest.raises(WeightsError, match="expected a .weights.h5 or .keras file"):
        WeightsSource(path=str(bad)).check()
    h5 = weights_files[0]
    vgg_fc1 = workloads.get("vgg16").layer("fc1")
    with pytest.raises(WeightsError, match=r"layer 'fc1' weight 0 has shape \(4608, 4096\), expected \(25088, 4096\)"):
        layer_weights(vgg_fc1, WeightsSource(path=str(h5)), keras_name="dense")
    conv = workloads.get("vgg16").layer("block1_conv1")
    with pytest.raises(WeightsError, match="no weights for layer 'block1_conv1'"):
        layer_weights(conv, WeightsSource(path=str(h5)))


@pytest.mark.slow
def test_action_weights_by_layer_name(tmp_path):
    """The windowed action model has no single Keras model; its file is keyed by layer name."""
    from helpers import items_for

    from mcdask.runtime.weights import save_by_name
    from mcdask.streaming.reference import reference_outputs

    w = workloads.get("action")
    rng = np.random.default_rng(5)
    arrays = {l.name: [(rng.standard_normal(s) * 0.05).astype(np.float32) for s in l.weight_shapes]
              for l in w.layers if l.weight_shapes}
    path = tmp_path / "action.weights.h5"
    save_by_name(path, arrays)
    src = WeightsSource(path=str(path))
    fc3 = w.layer("fc3")
    k, b = layer_weights(fc3, src, (10, 20))
    np.testing.assert_array_equal(k, arrays["fc3"][0][:, 10:20])
    items = items_for(w, 36)
    ours = reference_outputs("action", items, src)
    seeded = reference_outputs("action", items)
    assert ours.keys() == seeded.keys() == {34, 35}
    assert np.abs(ours[34] - seeded[34]).max() > 1e-3


def test_a_weights_path_is_checked_once_and_made_absolute(tmp_path, monkeypatch):
    """A relative --weights path would be read from each worker's own working directory; a
    garbage file would fail once per device: both are settled on the client."""
    from mcdask.errors import WeightsError
    from mcdask.runtime.weights import WeightsSource, save_by_name

    save_by_name(tmp_path / "w.weights.h5", {"fc3": [np.zeros((4096, 1000), np.float32), np.zeros(1000, np.float32)]})
    monkeypatch.chdir(tmp_path)
    checked = WeightsSource(0, "w.weights.h5").check()
    assert checked.path == str(tmp_path / "w.weights.h5")
    (tmp_path / "junk.weights.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsError, match="'junk.weights.h5': not a Keras weights file"):
        WeightsSource(0, "junk.weights.h5").check()


def test_a_compressed_keras_archive_is_inflated_once_and_capped(tmp_path):
    import zipfile

    import dask

    from mcdask.errors import WeightsError
    from mcdask.runtime.weights import WeightsSource, _open_h5, layer_weights, save_by_name

    w = workloads.get("alexnet")
    fc3 = w.layer("fc3")
    kernel = np.random.default_rng(0).random((4096, 1000), dtype=np.float32)
    save_by_name(tmp_path / "inner.weights.h5", {"fc3": [kernel, np.ones(1000, np.float32)]})
    archive = tmp_path / "m.keras"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(tmp_path / "inner.weights.h5", "model.weights.h5")
    src = WeightsSource(0, str(archive)).check()
    with _open_h5(src.path) as f:
        first = f.file.filename
    a = layer_weights(fc3, src, (0, 500))
    b = layer_weights(fc3, src, (500, 1000))
    with _open_h5(src.path) as f:
        assert f.file.filename == first        # the same inflated file, not a new copy per read
    np.testing.assert_array_equal(np.concatenate([a[0], b[0]], axis=1), kernel)
    with dask.config.set({"mcdask.weights.max-inflated-bytes": "1MB"}):
        archive.touch()                         # a new version of the file
        with pytest.raises(WeightsError, match="mcdask.weights.max-inflated-bytes"):
            layer_weights(fc3, WeightsSource(0, str(archive)), (0, 10))
