"""``mcdask profile``: measure every worker of a running cluster into a profile JSON file.

Examples::

    mcdask profile --scheduler tcp://10.0.0.1:8786 -o profile.json                 # every workload
    mcdask profile --scheduler tcp://10.0.0.1:8786 -w alexnet -w vgg16 --repeats 9 -o farm.json
    mcdask plan --workload alexnet --devices 6 --profile profile.json             # plan on it

What is measured and how: ``mcdask.profiling.assemble``. With ``--json`` the last stdout line is one JSON
object (the output path, per device the whole-model seconds per workload, memory, baseline and
task overhead, the default link).
"""

from __future__ import annotations

import json
import sys
import time

import click

import workloads
from mcdask import options
from mcdask.errors import McdaskError
from mcdask.security.tls import tls_options


@click.command("profile")
@tls_options
@options.scheduler
@click.option("--workload", "-w", "names", multiple=True, type=click.Choice(workloads.NAMES),
              help="workload to profile (repeatable) [default: all]")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="profile.json", show_default=True,
              help="where to write the profile")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True,
              help="at least this many back-to-back timed calls per piece (their sustained mean is kept)")
@click.option("--span-s", type=click.FloatRange(min=0), default=1.5, show_default=True,
              help="time each piece back to back for at least this many seconds (many CPU-quota periods)")
@click.option("--budget-s", type=click.FloatRange(min=0, min_open=True), default=6.0, show_default=True,
              help="stop timing a piece after this many seconds (once two calls are done)")
@click.option("--json", "as_json", is_flag=True, help="print a summary as JSON on the last stdout line")
def profile(scheduler, names, output, repeats, span_s, budget_s, as_json):
    """Measure every worker's layers, memory and task overhead, and the links between them."""
    import dask
    from distributed import Client

    from mcdask.profiling.assemble import profile_cluster

    names = list(names) or list(workloads.NAMES)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        click.echo(f"[{time.perf_counter() - t0:6.1f} s] {msg}", err=True)

    try:
        with dask.config.set({"distributed.comm.compression": dask.config.get("mcdask.compression")}), \
                Client(scheduler, timeout="30s") as client:
            prof = profile_cluster(client, names, repeats=repeats, span_s=span_s, budget_s=budget_s,
                                   progress=say)
        prof.save(output)
    except McdaskError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(f"cannot reach the scheduler at {scheduler} or write {output}: {e}") from e
    devices = []
    for d in prof.devices:
        k = prof.kinds[d.kind]
        devices.append({"device": d.name, "host": d.host, "memory_bytes": k.memory_bytes,
                        "baseline_bytes": k.baseline_bytes, "task_overhead_s": k.task_overhead_s,
                        "whole_model_s": {w: sum(k.layer_time_s[w].values()) for w in names},
                        "skipped": k.measured.get("skipped", {})})
    summary = {"output": output, "workloads": names, "devices": devices,
               "default_link": prof.default_link.to_dict(), "host_cores": prof.host_cores,
               "duration_s": prof.measured.get("duration_s")}
    lines = [f"wrote {output}: {len(devices)} devices, workloads {', '.join(names)}"]
    for d in devices:
        per = ", ".join(f"{w} {s * 1e3:.1f} ms" for w, s in d["whole_model_s"].items())
        lines.append(f"  {d['device']} ({d['host']}): {per}; memory {d['memory_bytes'] / 1e9:.2f} GB, baseline "
                     f"{d['baseline_bytes'] / 1e6:.0f} MB, task overhead {d['task_overhead_s'] * 1e3:.2f} ms"
                     + (f"; not built: {', '.join(d['skipped'])}" if d["skipped"] else ""))
    link = prof.default_link
    lines.append(f"  default link: {link.latency_s * 1e3:.2f} ms + bytes / {link.bandwidth_Bps / 1e6:.0f} MB/s")
    for line in lines:
        click.echo(line, err=as_json)
    if as_json:
        click.echo(json.dumps(summary))
        sys.stdout.flush()
