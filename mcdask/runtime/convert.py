"""The client's half of the litert backend: convert slices to LiteRT flatbuffers and ship each
device the ones it lacks.

A slice is converted from the very Keras layers and weights the tensorflow backend builds
(``mcdask.runtime.slices``, the same ``WeightsSource``): its Keras model is exported as a
SavedModel whose one signature takes the slice's inputs and returns its exports by name, batch
dimension left free, and TensorFlow's LiteRT converter turns that into a flatbuffer (about
30 MB of weights a second here; freezing the function into a GraphDef first took three times as
long). Each flatbuffer has a content key (``content_key``: the workload's facts, the layer
range, the units, the weights and, for a file, its size and time), under which the client keeps
it on its own disk (``mcdask.convert.cache-dir``): a later run, or a plan switch, converts nothing
twice. ``ship`` asks every device which
keys its disk cache holds intact (``mcdask.runtime.flatcache``), converts only what some device
lacks, and sends each device its missing ones straight from the client to the worker
(``Client.scatter(direct=True)``: not through the scheduler), ``CHUNK_BYTES`` at a time, where
they are written to disk and checked against their SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import workloads
from mcdask.runtime.pieces import SliceSpec, parts

#: bumped when the conversion changes what a flatbuffer holds
FORMAT = 2
#: the flatbuffer's one signature (``mcdask.runtime.litert`` finds inputs and exports by name in it)
SIGNATURE = "serving_default"
logger = logging.getLogger("mcdask.runtime.convert")


def content_key(spec: SliceSpec) -> str:
    """What a flatbuffer is, as 40 hex digits: the same for the same layers, units and weights,
    whatever plan, device or kernels use it."""
    w = workloads.get(spec.workload)
    weights = spec.weights
    stamp = None
    if weights.path:
        st = Path(weights.path).stat()
        stamp = [st.st_size, st.st_mtime_ns]
    doc = {"format": FORMAT, "workload": w.to_dict(), "start": spec.start, "end": spec.end,
           "units": list(spec.units) if spec.units else None, "weights": weights.id, "file": stamp}
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def to_flatbuffer(spec: SliceSpec) -> bytes:
    """The LiteRT flatbuffer of ``spec``'s slice, from the tensorflow backend's own build: one
    signature, ``serving_default``, its inputs and outputs named as the slice's."""
    from mcdask.runtime.slices import build_model, ensure_tf

    ensure_tf()
    import keras
    import tensorflow as tf

    w = workloads.get(spec.workload)
    model = build_model(w, spec.start, spec.end, spec.units, spec.weights)
    inputs, outputs = w.stage_inputs(spec.start, spec.end), w.stage_outputs(spec.start, spec.end)
    signature = [tf.TensorSpec((None,) + tuple(t.shape[1:]), tf.float32, name=x) for x, t in zip(inputs, model.inputs)]

    def serve(*xs):
        out = model(list(xs), training=False)
        return dict(zip(outputs, out if isinstance(out, (list, tuple)) else [out]))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, signature)
    with tempfile.TemporaryDirectory(prefix="mcdask-convert-") as folder:
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        # weights after the flatbuffer's tables, by offset (LiteRT reads both layouts): about 40 %
        # less conversion time here; a converter without the setting ignores it
        converter._experimental_use_buffer_offset = True
        return bytes(converter.convert())


def client_cache():
    """The client's disk cache of converted flatbuffers: ``mcdask.convert.cache-dir``, else
    ``~/.cache/mcdask/flatbuffers``, bounded by ``mcdask.convert.cache-max-bytes``."""
    import dask.config

    from mcdask.runtime.flatcache import max_bytes, opened

    folder = dask.config.get("mcdask.convert.cache-dir", None) or "~/.cache/mcdask/flatbuffers"
    return opened(Path(folder).expanduser(), max_bytes("mcdask.convert.cache-max-bytes"))


def flatbuffer_path(spec: SliceSpec) -> Path:
    """Where the client's cache holds ``spec``'s flatbuffer, converted now if it does not."""
    key, cache = content_key(spec), client_cache()
    return cache.find(key) or cache.put(key, to_flatbuffer(spec))


def flatbuffer(spec: SliceSpec) -> bytes:
    """``spec``'s flatbuffer (``flatbuffer_path``'s bytes)."""
    return flatbuffer_path(spec).read_bytes()


def keys_of(specs) -> dict[str, str]:
    """slice key -> content key of each flatbuffer the specs load (``parts``: one per spec, or
    one per part of a ``mixed`` one): what a litert deployment tells its devices."""
    return {p.key: content_key(p) for s in specs for p in parts(s)}


def _missing(dask_worker, keys: list[str]) -> list[str]:
    """``client.run`` target: the keys this device's cache holds no intact entry of."""
    from mcdask.runtime.flatcache import for_worker

    return for_worker(dask_worker).missing(keys)


#: bytes of a flatbuffer sent to a device at a time: a device holds one chunk in memory, not a
#: flatbuffer (the action model's dense layers are one of 520 MB, and a pi3 has 1 GB)
CHUNK_BYTES = 16 * 2**20


def _store_chunk(dask_worker, key: str, data_key: str, offset: int, total: int, sha256: str) -> int:
    """``client.run`` target: append the scattered chunk ``data_key`` to flatbuffer ``key`` in the
    disk cache (``FlatCache.put_chunk``); returns its length."""
    from mcdask.runtime.flatcache import for_worker

    data = dask_worker.data[data_key]
    for_worker(dask_worker).put_chunk(key, offset, data, total, sha256)
    return len(data)


def _deadline_s() -> float:
    import dask.config
    import dask.utils

    return float(dask.utils.parse_timedelta(dask.config.get("mcdask.controller.deploy-timeout", "120s")))


def _on(client, addr: str, what: str, function, **kwargs):
    """``function(dask_worker, **kwargs)`` on the worker at ``addr``, within the deployment's
    deadline (``mcdask.controller.deploy-timeout``); its exception is raised here."""
    import functools

    from mcdask.errors import DeploymentError
    from mcdask.runtime.deploy import run_within

    timeout_s = _deadline_s()
    try:
        out = client.sync(run_within, client, functools.partial(function, **kwargs), [addr], timeout_s)[addr]
    except TimeoutError:
        raise DeploymentError(f"device {addr} did not {what} within {timeout_s:.0f} s "
                              "(mcdask.controller.deploy-timeout)") from None
    if isinstance(out, BaseException):
        raise out
    return out


def send(client, addr: str, key: str, path: Path) -> int:
    """Put the flatbuffer at ``path`` into the disk cache of the worker at ``addr`` as ``key``,
    ``CHUNK_BYTES`` at a time, each scattered straight to the worker; returns the bytes sent.
    Each chunk has the deployment's deadline to arrive and to be written."""
    from mcdask.errors import DeploymentError
    from mcdask.runtime.flatcache import entry_sha256

    total, sha256, offset = path.stat().st_size, entry_sha256(path), 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK_BYTES)
            data_key = f"mcdask-flatbuffer-{key}-{offset}-{addr}"
            what = f"take bytes {offset:,}-{offset + len(chunk):,} of flatbuffer {key} ({total:,} bytes)"
            try:
                futures = client.scatter({data_key: chunk}, workers=[addr], direct=True, hash=False,
                                         timeout=_deadline_s())
            except TimeoutError:
                raise DeploymentError(f"device {addr} did not {what} within {_deadline_s():.0f} s "
                                      "(mcdask.controller.deploy-timeout)") from None
            try:
                _on(client, addr, f"store {what}", _store_chunk, key=key, data_key=data_key, offset=offset,
                    total=total, sha256=sha256)
            finally:
                client.cancel(list(futures.values()))
            offset += len(chunk)
            if offset >= total:
                return total


def ship(client, wanted: dict[str, list[SliceSpec]], addresses: dict[str, str]) -> int:
    """Make the disk cache of every worker (name -> the specs it will load) hold their
    flatbuffers; returns the bytes sent. ``addresses``: worker name -> address."""
    needs = {addresses[n]: keys_of(specs) for n, specs in wanted.items() if specs}
    if not needs:
        return 0
    spec_of = {p.key: p for specs in wanted.values() for s in specs for p in parts(s)}
    lacking = {}
    for addr, keys in needs.items():
        missing = _on(client, addr, "say which flatbuffers its disk holds", _missing, keys=sorted(set(keys.values())))
        if missing:
            lacking[addr] = {ck: spec_of[sk] for sk, ck in keys.items() if ck in missing}
    sent = 0
    for addr, specs in lacking.items():
        here = sum(send(client, addr, ck, flatbuffer_path(spec)) for ck, spec in specs.items())
        logger.info("mcdask: sent %d flatbuffers (%d bytes) to %s", len(specs), here, addr)
        sent += here
    return sent
