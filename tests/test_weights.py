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


@pytest.mark.parametrize("workload,layer,units", [("action", "fc3", None), ("alexnet", "conv2", (30, 101)),
                                                  ("vgg16", "fc1", (250, 263))])
def test_seeded_weights_are_the_whole_blocks_draw_however_the_rows_are_chunked(monkeypatch, workload, layer, units):
    """Each block of columns is its generator's kernel drawn at once, then its bias: drawing the
    rows a chunk at a time (odd chunks, an odd 51-unit block) must not change a value, or
    devices and cached flatbuffers of another version would disagree."""
    import zlib

    from mcdask.runtime import weights

    l = workloads.get(workload).layer(layer)
    kshape = l.weight_shapes[0]
    a, b = units or (0, kshape[-1])
    fan_in = int(np.prod(kshape[:-1]))
    fan_out = kshape[-1] * (int(np.prod(kshape[:-2])) if l.kind == "conv" else 1)
    limit = np.sqrt(6.0 / fan_in) if l.activation == "relu" else np.sqrt(6.0 / (fan_in + fan_out))
    ks, bs = [], []
    for blk in range(a // weights.BLOCK, (b - 1) // weights.BLOCK + 1):
        lo, hi = blk * weights.BLOCK, min((blk + 1) * weights.BLOCK, kshape[-1])
        rng = np.random.default_rng([11, zlib.crc32(l.name.encode()), blk])
        k = rng.random(tuple(kshape[:-1]) + (hi - lo,), dtype=np.float32)
        k *= 2 * limit
        k -= limit
        ks.append(k[..., max(a, lo) - lo:min(b, hi) - lo])
        bs.append((rng.random(hi - lo, dtype=np.float32) * 0.1 - 0.05)[max(a, lo) - lo:min(b, hi) - lo])
    for chunk in (1, 3 * 4 * int(np.prod(kshape[1:-1])) * (b - a) + 4, weights.CHUNK_BYTES):
        monkeypatch.setattr(weights, "CHUNK_BYTES", chunk)
        calls: list[tuple[int, int]] = []
        k, bias = layer_weights(l, WeightsSource(11), units)
        weights.fill_weights(l, WeightsSource(11), lambda r0, rows, calls=calls: calls.append((r0, len(rows))), units)
        np.testing.assert_array_equal(k, np.concatenate(ks, axis=-1))
        np.testing.assert_array_equal(bias, np.concatenate(bs))
        assert [r0 for r0, _ in calls] == list(np.cumsum([0] + [n for _, n in calls[:-1]]))
        assert sum(n for _, n in calls) == kshape[0] and (chunk > 1 or len(calls) == kshape[0])


_BUILD_PEAK = """
import json, sys
from mcdask.runtime.slices import Slice, SliceSpec, WeightsSource, ensure_tf
ensure_tf(1)
def status(key):
    return [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key)][0]
spec = SliceSpec("vgg16", 19, 20, (0, 2048), WeightsSource(path=sys.argv[1]) if sys.argv[1] else WeightsSource())
Slice(SliceSpec("alexnet", 0, 2))(Slice(SliceSpec("alexnet", 0, 2)).example_feeds())   # TensorFlow warmed up
open("/proc/self/clear_refs", "w").write("5")          # the high-water mark starts here
before = status("VmRSS")
s = Slice(spec)
s(s.example_feeds())
print(json.dumps({"peak": status("VmHWM") - before, "weights": s.param_bytes}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("source", ["seeded", "file"])
def test_building_a_tensorflow_slice_peaks_under_1_3x_its_weights(tmp_path, source):
    """Half of VGG16's fc1 (25088 x 2048, 205 MB), built and run once in a fresh process: its
    resident peak above what the process held before stays under 1.3x its weight bytes, from
    the seed and from a weights file (the variables adopt the buffers the rows were read into;
    converting NumPy arrays to tensors peaked at 3.1x)."""
    import json
    import subprocess
    import sys

    from mcdask.runtime.weights import save_by_name

    path = ""
    if source == "file":
        fc1 = workloads.get("vgg16").layer("fc1")
        path = str(tmp_path / "fc1.weights.h5")
        rng = np.random.default_rng(3)
        save_by_name(path, {"fc1": [rng.random(fc1.weight_shapes[0], dtype=np.float32),
                                    rng.random(fc1.weight_shapes[1], dtype=np.float32)]})
    out = subprocess.run([sys.executable, "-c", _BUILD_PEAK, path], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["weights"] == 25088 * 2048 * 4 + 2048 * 4
    assert got["peak"] <= 1.3 * got["weights"], \
        f"peak {got['peak'] / 1e6:.0f} MB for {got['weights'] / 1e6:.0f} MB of weights"


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
