"""The unsplit model, for checking a split one: frames streamed through a plan in this process
(``run_local``), through the single-device plan (``reference_outputs``), and through the
workload's own Keras model by Keras alone (``with_weights``, ``keras_outputs``,
``against_keras``), which shares no code with mcdask's slices, merges or windows."""

from __future__ import annotations

import workloads
from mcdask.model.plan import Plan, single_device
from mcdask.runtime.local import LocalRunner
from mcdask.runtime.slices import prepare_input
from mcdask.runtime.weights import WeightsSource
from mcdask.streaming.records import Item
from mcdask.streaming.stream import Stream


def run_local(plan: Plan, items: list[Item], weights: WeightsSource = WeightsSource()):
    """Records of streaming ``items`` through ``plan`` in this process."""
    runner = LocalRunner(plan, weights)
    return list(Stream(runner, plan, runner.workload, depth=1).run(items))


def reference_outputs(workload: str, items: list[Item], weights: WeightsSource = WeightsSource()) -> dict:
    """frame -> output of the unsplit model (one device, no shards, no replicas)."""
    w = workloads.get(workload)
    return {r.frame: r.output for r in run_local(single_device(w), items, weights) if r.status == "ok"}


def check_against_reference(workload, items, records, weights) -> dict:
    """Compare every classified frame with the unsplit model run in this process."""
    import numpy as np

    ref = reference_outputs(workload.name, items, weights)
    diffs, scale, missing = [], 0.0, []
    for r in records:
        if r.status != "ok":
            continue
        if r.frame not in ref:
            missing.append(r.frame)
            continue
        diffs.append(float(np.abs(r.output - ref[r.frame]).max()))
        scale = max(scale, float(np.abs(ref[r.frame]).max()))
    worst = max(diffs) if diffs else None
    return {"checked": len(diffs), "max_abs_diff": worst, "output_scale": scale,
            "equal": worst is not None and not missing and worst <= 1e-5 * max(scale, 1e-12),
            "missing_in_reference": missing}


def keras_layers(model) -> dict:
    """Every layer of a Keras ``model`` by name, looking inside nested models and
    TimeDistributed wrappers (where the built-in action model keeps its streams)."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", None)       # TimeDistributed wraps a layer or a model
        for sub in (layer,) if inner is None else (layer, inner):
            out[sub.name] = sub
            if hasattr(sub, "layers"):
                out.update(keras_layers(sub))
    return out


def with_weights(model, workload, weights: WeightsSource = WeightsSource()):
    """``model`` (the workload's own Keras model) given the weights mcdask's devices use, layer
    by layer by name: Keras then computes the same function by its own code, an oracle for the
    split model that shares nothing with mcdask's slicing, merging or windows."""
    from mcdask.runtime.weights import layer_weights

    by_name = keras_layers(model)
    aliases = workload.keras_applications.get("names", {})
    for layer in workload.layers:
        if layer.weight_shapes:
            by_name[layer.name].set_weights(layer_weights(layer, weights, alias=aliases.get(layer.name)))
    return model


def keras_outputs(model, workload, items: list[Item], preprocess: str = "scale") -> dict:
    """frame -> Keras ``model``'s ``predict`` for every frame whose inputs, and the windows of
    frames before it that the model reads, are all there. A Keras input of shape (window, ...)
    gets that frame's last ``window`` inputs; image inputs are preprocessed with ``preprocess``
    (``mcdask.runtime.slices.prepare_input``), as the devices do for those weights."""
    import numpy as np

    have = {it.frame: it.inputs for it in items if it.inputs is not None}
    names = list(workload.inputs) if len(workload.inputs) > 1 else [workload.image_input]
    windows = [int(t.shape[1]) if len(t.shape) == 5 else 0 for t in model.inputs]
    frames = [f for f in sorted(have) if all(f - k in have for w in windows for k in range(max(w, 1)))]
    if not frames:
        return {}
    batch = []
    for name, w in zip(names, windows):
        if w:
            x = [np.stack([have[f - w + 1 + k][name][0] for k in range(w)]) for f in frames]
        else:
            x = [have[f][name][0] for f in frames]
        batch.append(prepare_input(np.stack(x), preprocess if workload.roles.get(name) == "image" else "scale"))
    out = np.asarray(model.predict(batch if len(batch) > 1 else batch[0], verbose=0, batch_size=8))
    return {f: out[i:i + 1] for i, f in enumerate(frames)}


def against_keras(model, workload, items: list[Item], records, preprocess: str = "scale") -> dict:
    """Compare every classified frame with the Keras ``model`` (the user's own, or a built-in
    workload's with ``with_weights``): its ``predict`` on the same frames, preprocessed with
    ``preprocess`` (``mcdask.runtime.weights.preprocessing`` of the weights the devices used)."""
    import numpy as np

    want = keras_outputs(model, workload, items, preprocess)
    ok = [r for r in records if r.status == "ok" and r.frame in want]
    if not ok:
        return {"checked": 0, "max_abs_diff": None, "output_scale": 0.0, "equal": False}
    got = np.concatenate([np.asarray(r.output).reshape(1, -1) for r in ok])
    ref = np.concatenate([want[r.frame] for r in ok])
    diff, scale = float(np.abs(got - ref).max()), float(np.abs(ref).max())
    return {"checked": len(ok), "max_abs_diff": diff, "output_scale": scale, "equal": diff <= 1e-5 * max(scale, 1e-12)}
