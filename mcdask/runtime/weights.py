"""Where a slice's weights come from: a seed, or a user's Keras weights file.

Seeded weights are identical on every device without shipping any: each layer's kernel is
drawn from NumPy's PCG64 generator seeded by (seed, layer name, column block), in blocks of
``BLOCK`` output units (output channels for conv layers). A shard holding units ``[a, b)``
draws only the blocks it overlaps, so building a slice costs memory in proportion to the
slice, never to the whole model.

A weights file (``.weights.h5``, ``.keras`` or a Keras 2 ``.h5``) is read with h5py, one layer's
arrays at a time, and a shard reads only its columns. Three layouts are understood:

- Keras 3's own (what ``model.save_weights`` / ``model.save`` write for the workload's Keras
  model or the whole model built by ``mcdask.runtime.slices.build_model``: layers keyed by class
  name and order, ``layers/dense_1/vars/0``);
- one keyed by mcdask's layer names (``layers/fc2/vars/0``, written by ``save_by_name``), which
  also serves workloads no single Keras model can hold (the windowed action model);
- Keras 2's h5 weights (what Keras-applications ships, e.g. ``vgg16_weights_tf_dim_ordering_tf_kernels.h5``:
  a group per layer name listing its ``weight_names``, top-level attribute ``layer_names``), by
  layer name or the name the workload's ``keras_applications["names"]`` gives it there.

Preprocessing belongs to the weights (``preprocessing``): a Keras 2 file gets the workload's
``keras_applications["preprocess"]`` (caffe for VGG16), anything else the workload's own
(x/255), unless the source names one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mcdask.errors import WeightsError
from workloads.spec import PREPROCESSING

BLOCK = 256


@dataclass(frozen=True)
class WeightsSource:
    """``path=None``: seeded initialisation with ``seed``; else a Keras weights file.
    ``preprocess`` overrides the preprocessing the weights get (see ``preprocessing``)."""

    seed: int = 0
    path: str | None = None
    preprocess: str | None = None

    @property
    def id(self) -> str:
        base = f"file:{Path(self.path).resolve()}" if self.path else f"seed:{self.seed}"
        return base + (f"+{self.preprocess}" if self.preprocess else "")

    def to_dict(self) -> dict:
        return {"seed": self.seed, "path": self.path, "preprocess": self.preprocess}

    @classmethod
    def from_dict(cls, d: dict | None) -> WeightsSource:
        d = d or {}
        return cls(int(d.get("seed", 0)), d.get("path"), d.get("preprocess"))

    def describe(self) -> str:
        """What the answers come from, for a run's summary."""
        if self.path is None:
            return f"seeded (random, seed {self.seed}): answers are not meaningful"
        return self.path

    def check(self) -> WeightsSource:
        """This source with its file checked here, once, before any device reads it: it exists,
        is a .weights.h5 or .keras file that opens, and its path is absolute (a relative path
        would be read from each worker's own working directory)."""
        if self.preprocess is not None and self.preprocess not in PREPROCESSING:
            raise WeightsError(f"preprocessing {self.preprocess!r}; choose one of {', '.join(PREPROCESSING)}")
        if self.path is None:
            return self
        p = Path(self.path)
        if not p.is_file():
            raise WeightsError(f"weights file {self.path!r} does not exist")
        if p.suffix not in (".h5", ".keras"):
            raise WeightsError(f"weights file {self.path!r}: expected a .weights.h5 or .keras file (or a Keras 2 .h5)")
        path = str(p.resolve())
        try:
            with _open_h5(path) as f:
                if _root(f) is None:
                    raise WeightsError(f"weights file {self.path!r}: holds no layers/ group nor Keras 2 "
                                       "layer_names (not Keras weights)")
        except (OSError, zipfile.BadZipFile) as e:
            raise WeightsError(f"weights file {self.path!r}: not a Keras weights file ({e})") from None
        return replace(self, path=path)


def keras2(path: str) -> bool:
    """Whether ``path`` is in Keras 2's h5 layout (Keras-applications' files)."""
    with _open_h5(path) as f:
        return "layers" not in f and _root(f) is not None


def preprocessing(workload, source: WeightsSource) -> str:
    """How image inputs are fed to these weights: the source's own choice, else a Keras 2 file's
    Keras-applications preprocessing (``workload.keras_applications``), else the workload's."""
    if source.preprocess:
        return source.preprocess
    if source.path and keras2(source.path):
        return workload.keras_applications.get("preprocess", workload.preprocess)
    return workload.preprocess


_KERAS_CLASS = {"conv": "conv2d", "pool": "max_pooling2d", "flatten": "flatten", "dense": "dense",
                "pyramid": "temporal_pyramid"}


def keras_names(workload) -> dict[str, str]:
    """Layer name -> the name Keras 3 saves it under in a whole-model weights file."""
    seen: dict[str, int] = {}
    out = {}
    for layer in workload.layers:
        cls = _KERAS_CLASS[layer.kind]
        k = seen.get(cls, -1) + 1
        seen[cls] = k
        out[layer.name] = cls if k == 0 else f"{cls}_{k}"
    return out


def save_by_name(path: str | Path, weights: dict[str, list[np.ndarray]]) -> None:
    """Write ``{layer name: [kernel, bias]}`` as a weights file mcdask reads by layer name
    (for instance from a trained Keras model: ``{l.name: l.get_weights() for l in model.layers}``)."""
    import h5py

    with h5py.File(path, "w") as f:
        for name, arrays in weights.items():
            for i, a in enumerate(arrays):
                f.create_dataset(f"layers/{name}/vars/{i}", data=np.asarray(a, np.float32))


def layer_weights(layer, source: WeightsSource, units: tuple[int, int] | None = None,
                  keras_name: str | None = None, alias: str | None = None) -> list[np.ndarray]:
    """[kernel, bias] of ``layer`` (float32), restricted to output units ``[a, b)`` if given.
    ``keras_name`` is where a Keras whole-model file keeps it (see ``keras_names``), ``alias``
    its name in a Keras 2 file where that differs (``workload.keras_applications["names"]``)."""
    if not layer.weight_shapes:
        return []
    a, b = _units(layer, units)
    kernel = np.empty(tuple(layer.weight_shapes[0][:-1]) + (b - a,), np.float32)

    def put(r0: int, rows: np.ndarray) -> None:
        kernel[r0:r0 + len(rows)] = rows

    bias = fill_weights(layer, source, put, units, keras_name, alias)
    return [kernel, bias]


def fill_weights(layer, source: WeightsSource, put, units: tuple[int, int] | None = None,
                 keras_name: str | None = None, alias: str | None = None) -> np.ndarray:
    """Hand ``layer``'s kernel (output units ``[a, b)`` if given) to ``put(r0, rows)`` a few
    rows of its first axis at a time, ``rows`` being ``kernel[r0:r0 + len(rows)]`` (about
    ``CHUNK_BYTES`` each), and return its bias. A builder that fills its variable in place
    this way holds the kernel once, plus one chunk."""
    a, b = _units(layer, units)
    if source.path is None:
        return _seeded(layer, source.seed, a, b, put)
    with _open_h5(source.path) as f:
        return _from_file(f, layer, a, b, source.path, put, keras_name, alias)


#: bytes of kernel rows drawn or read at a time (``fill_weights``)
CHUNK_BYTES = 4 << 20


def _units(layer, units: tuple[int, int] | None) -> tuple[int, int]:
    total = layer.weight_shapes[0][-1]
    a, b = units if units is not None else (0, total)
    if not 0 <= a < b <= total:
        raise WeightsError(f"layer {layer.name!r}: units [{a}, {b}) outside [0, {total})")
    return a, b


def _row_steps(shape: tuple[int, ...], columns: int) -> list[tuple[int, int]]:
    """Row ranges of a ``shape[:-1] + (columns,)`` kernel, about ``CHUNK_BYTES`` each."""
    per_row = 4 * int(np.prod(shape[1:-1], dtype=np.int64)) * columns
    step = max(1, CHUNK_BYTES // max(1, per_row))
    return [(r0, min(shape[0], r0 + step)) for r0 in range(0, shape[0], step)]


def _seeded(layer, seed: int, a: int, b: int, put) -> np.ndarray:
    """Columns ``[a, b)`` of the seeded kernel, in row chunks, and its bias. Each ``BLOCK`` of
    columns has its own generator, which draws the block's kernel in C order and then its
    bias; drawing the rows a chunk at a time reads the same stream, so the values are those of
    the whole block drawn at once."""
    kshape = tuple(layer.weight_shapes[0])
    fan_in = int(np.prod(kshape[:-1]))
    fan_out = kshape[-1] * (int(np.prod(kshape[:-2])) if layer.kind == "conv" else 1)
    # He-uniform keeps ReLU stacks from vanishing; Glorot for the softmax layer.
    limit = np.sqrt(6.0 / fan_in) if layer.activation == "relu" else np.sqrt(6.0 / (fan_in + fan_out))
    name_key = zlib.crc32(layer.name.encode())
    blocks = []
    for blk in range(a // BLOCK, (b - 1) // BLOCK + 1):
        lo, hi = blk * BLOCK, min((blk + 1) * BLOCK, kshape[-1])
        blocks.append((lo, hi, max(a, lo), min(b, hi), np.random.default_rng([seed, name_key, blk])))
    for r0, r1 in _row_steps(kshape, b - a):
        rows = np.empty((r1 - r0,) + kshape[1:-1] + (b - a,), np.float32)
        for lo, hi, s0, s1, rng in blocks:
            k = rng.random((r1 - r0,) + kshape[1:-1] + (hi - lo,), dtype=np.float32)
            k *= 2 * limit
            k -= limit
            rows[..., s0 - a:s1 - a] = k[..., s0 - lo:s1 - lo]
        put(r0, rows)
    bias = np.empty(b - a, np.float32)
    for lo, hi, s0, s1, rng in blocks:
        bb = rng.random(hi - lo, dtype=np.float32) * 0.1 - 0.05
        bias[s0 - a:s1 - a] = bb[s0 - lo:s1 - lo]
    return bias


def _inflated(path: str, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Path:
    """The compressed weights member of ``path``, inflated once into this machine's temp dir
    (streamed in 1 MiB pieces, so memory stays flat) and reused by every slice built from it;
    refused past ``mcdask.weights.max-inflated-bytes`` (a zip bomb is not a model)."""
    import dask.config
    import dask.utils

    cap = dask.utils.parse_bytes(dask.config.get("mcdask.weights.max-inflated-bytes", "8GiB"))
    if info.file_size > cap:
        raise WeightsError(f"{path}: its weights inflate to {info.file_size:,} bytes, over "
                           f"mcdask.weights.max-inflated-bytes ({cap:,})")
    st = Path(path).stat()
    key = hashlib.sha1(f"{Path(path).resolve()}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / "mcdask-weights" / f"{key}.weights.h5"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_suffix(f".{os.getpid()}.part")
        with z.open(info) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        part.replace(out)
    return out


@contextmanager
def _open_h5(path: str):
    import h5py

    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".weights.h5")]
            if not names:
                raise WeightsError(f"{path}: a .keras archive without model.weights.h5")
            info = z.getinfo(names[0])
            if info.compress_type == zipfile.ZIP_STORED:
                # read straight out of the archive: h5py seeks, only the needed bytes are read
                with z.open(info) as raw, h5py.File(raw, "r") as f:
                    yield f
                return
            with h5py.File(_inflated(path, z, info), "r") as f:   # compressed: inflated once, on disk
                yield f
        return
    with h5py.File(path, "r") as f:
        yield f


def _root(f):
    """The group holding a Keras 2 file's layers (top level, or ``model_weights/`` of a whole
    saved model), or ``f`` itself for Keras 3 / mcdask layouts; None if neither."""
    if "layers" in f:
        return f
    for g in (f, f.get("model_weights")):
        if g is not None and "layer_names" in g.attrs:
            return g
    return None


def _find_vars(f, name: str, keras_name: str | None, alias: str | None, path: str) -> list:
    """The datasets of a layer's weights, in Keras's order (kernel, bias)."""
    if "layers" in f:       # Keras 3 / by name: layers/NAME/vars/0, 1
        for base in (f"layers/{name}/vars", f"layers/{keras_name}/vars" if keras_name else None):
            if base and base in f:
                return [f[base].get(str(i)) for i in range(len(f[base]))]
    else:                   # Keras 2: NAME/ with attribute weight_names, datasets NAME/<weight name>
        root = _root(f)
        for n in (name, alias):
            if n and n in root:
                g = root[n]
                return [g[w.decode() if isinstance(w, bytes) else str(w)] for w in g.attrs.get("weight_names", [])]
    also = [n for n in (keras_name, alias) if n]
    raise WeightsError(f"{path}: no weights for layer {name!r}"
                       + (f" (nor {' / '.join(map(repr, also))})" if also else "")
                       + "; save the workload's Keras model, or write the file with "
                         "mcdask.runtime.weights.save_by_name")


def _from_file(f, layer, a: int, b: int, path: str, put, keras_name: str | None = None,
               alias: str | None = None) -> np.ndarray:
    arrays = _find_vars(f, layer.name, keras_name, alias, path)
    for i, shape in enumerate(layer.weight_shapes):
        ds = arrays[i] if i < len(arrays) else None
        if ds is None or tuple(ds.shape) != tuple(shape):
            got = None if ds is None else tuple(ds.shape)
            raise WeightsError(f"{path}: layer {layer.name!r} weight {i} has shape {got}, expected {tuple(shape)}")
    kernel, bias = arrays[0], arrays[1]
    for r0, r1 in _row_steps(tuple(kernel.shape), b - a):
        put(r0, np.asarray(kernel[r0:r1, ..., a:b], dtype=np.float32))
    return np.asarray(bias[a:b], dtype=np.float32)
