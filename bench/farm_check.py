"""Measure what an emulated farm gives against what it was asked for: links and device speed.

``python -m bench.farm_check --devices 6`` brings up a farm of pi3 devices (at real speed
unless ``--time-scale``), measures TCP bandwidth and RTT between neighbouring devices and from
the host, and the whole-AlexNet time on every device: first each device alone, then all of
them at once (the model is built with the quota lifted and called from the worker's task
thread, as slices are). The last stdout line is one JSON object; ``--out`` also writes it to
the results folder (``bench.provenance.results_dir``). Issue figures for the farm come from this command.
"""

from __future__ import annotations

import json
import statistics
import time

import click

from bench.provenance import provenance, results_dir


def _alexnet_times(client, addresses: list[str], batches: int, repeats: int) -> dict[str, dict]:
    """Per device: ``batches`` batch means of ``repeats`` back-to-back inferences, all devices
    in ``addresses`` at the same time."""
    from cluster import calibrate

    out: dict[str, list[float]] = {a: [] for a in addresses}
    for _ in range(batches):
        futs = {a: client.submit(calibrate.measure, "alexnet", repeats, workers=[a], pure=False,
                                 allow_other_workers=False) for a in addresses}
        for a, f in futs.items():
            out[a].append(f.result()["mean_s"])
    return {a: {"batch_means_s": m, "median_s": statistics.median(m)} for a, m in out.items()}


def check(n: int, time_scale: float, batches: int, repeats: int, log=print) -> dict:
    from distributed import Client

    from cluster import calibrate, farm
    from cluster.devices import FarmSpec

    t0 = time.perf_counter()
    st = farm.up(FarmSpec.uniform(n, "pi3"), time_scale=time_scale, log=log)
    try:
        devs = st["devices"]
        links = []
        for i, d in enumerate(devs):
            links.append(farm.measure_link(devs[i - 1]["name"] if i else None, d["name"]))
            log(f"link {links[-1]['src']} -> {d['name']}: {links[-1]['mbit_s']:.1f} Mbit/s, "
                f"RTT {links[-1]['rtt_ms_median']:.2f} ms")
        addr = {d["name"]: d["address"] for d in devs}
        with Client(st["scheduler"], timeout="60s", set_as_default=False) as c:
            farm.set_caps(False)
            try:
                for a in addr.values():
                    c.submit(calibrate.prepare, "alexnet", workers=[a], pure=False,
                             allow_other_workers=False).result()
            finally:
                farm.set_caps(True)
            solo = {}
            for name, a in addr.items():
                solo[name] = _alexnet_times(c, [a], batches, repeats)[a]
                log(f"{name} alone: AlexNet {solo[name]['median_s']:.3f} s")
            together = {name: r for name, r in zip(addr, _alexnet_times(c, list(addr.values()), batches,
                                                                          repeats).values())}
            log("all at once: " + ", ".join(f"{k} {v['median_s']:.3f} s" for k, v in together.items()))
        target = devs[0]["target_alexnet_s"]
        dd = [l for l in links if l["src"] != "host"]
        hl = [l for l in links if l["src"] == "host"]
        return {
            "devices": n, "time_scale": time_scale, "target_alexnet_s": target,
            "calibration": st.get("calibration"), "verification": st.get("verification"),
            "shares": {d["name"]: {"compute": d["cpu_share"], "device": d["device_share"]} for d in devs},
            "links": links,
            "device_to_device_mbit": [min(l["mbit_s"] for l in dd), max(l["mbit_s"] for l in dd)] if dd else None,
            "device_to_device_rtt_ms": ([min(l["rtt_ms_median"] for l in dd), max(l["rtt_ms_median"] for l in dd)]
                                        if dd else None),
            "host_to_device_mbit": [l["mbit_s"] for l in hl], "host_to_device_rtt_ms": [l["rtt_ms_median"] for l in hl],
            "alexnet_alone_s": {k: v["median_s"] for k, v in solo.items()},
            "alexnet_all_busy_s": {k: v["median_s"] for k, v in together.items()},
            "alexnet_detail": {"alone": solo, "all_busy": together, "batches": batches, "repeats": repeats,
                               "statistic": "median of batch means of back-to-back inferences"},
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    finally:
        farm.down(log=log)


@click.command()
@click.option("--devices", default=6, show_default=True)
@click.option("--time-scale", default=1.0, show_default=True)
@click.option("--batches", default=3, show_default=True)
@click.option("--repeats", default=8, show_default=True, help="inferences per batch")
@click.option("--out", default=None, help="also write OUT.json (into bench/results in a checkout, else here)")
def main(devices, time_scale, batches, repeats, out) -> None:
    result = check(devices, time_scale, batches, repeats, log=lambda m: click.echo(m, err=True))
    result["provenance"] = provenance()
    if out:
        folder = results_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{out}.json").write_text(json.dumps(result, indent=1) + "\n")
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
