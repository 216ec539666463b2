"""``mcdask status``: what the ``/mcdask`` page shows, in a terminal (rich) or as JSON.

Asks the scheduler's ``mcdask_state`` handler (the dashboard plugin, registered by every
deploy) for its snapshot; a scheduler without it still answers with its metadata and workers.
"""

from __future__ import annotations

import json

import click

from mcdask import options
from mcdask.security.tls import connect_problem, tls_options


def fetch(address: str, timeout: str = "10s") -> dict:
    """The snapshot from the scheduler at ``address``."""
    from distributed import Client

    from mcdask.dashboard.plugin import STATE_HANDLER
    from mcdask.runtime.plugin import METADATA_KEY

    with Client(address, timeout=timeout, set_as_default=False) as client:
        async def ask():
            return await getattr(client.scheduler, STATE_HANDLER)()
        try:
            snap = client.sync(ask)
        except Exception as e:   # no dashboard plugin: the deployment and worker count only
            dep = client.get_metadata(list(METADATA_KEY), default=None)
            snap = {"deployment": dep and {"id": dep.get("id"), "plan_id": dep.get("plan_id"),
                                           "binding": dep.get("binding")},
                    "devices": [{"device": d, "worker": w} for d, w in (dep or {}).get("binding", {}).items()],
                    "streams": [], "workers": len(client.scheduler_info(n_workers=-1)["workers"]),
                    "note": f"no mcdask dashboard plugin on the scheduler ({type(e).__name__})"}
        snap["dashboard"] = client.dashboard_link.rsplit("/", 1)[0] + "/mcdask" if client.dashboard_link else None
    return snap


def _gib(b) -> str:
    return "-" if not b else f"{b / 1024 ** 3:.2f}"


def render(snap: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    dep = snap.get("deployment")
    if not dep:
        con.print(f"no plan deployed ({snap.get('workers', 0)} workers)")
        return
    con.print(f"plan [bold]{dep.get('plan_id')}[/] ({dep.get('strategy', '-')}, {dep.get('workload', '-')}) "
              f"on {len(snap['devices'])} devices; {snap.get('workers')} workers; page {snap.get('dashboard')}")
    if snap.get("note"):
        con.print(snap["note"])
    t = Table("device", "worker", "pieces", "cpu", "executing", "memory GiB", "limit GiB")
    for d in snap["devices"]:
        name = d["device"] + (" (bottleneck)" if d.get("bottleneck") else "")
        t.add_row(f"[red]{name}[/]" if d.get("bottleneck") else name, str(d.get("worker")),
                  ", ".join(d.get("pieces", [])), f"{d.get('utilisation', 0) * 100:.0f}%", str(d.get("executing", "-")),
                  _gib(d.get("memory_bytes")), _gib(d.get("memory_limit_bytes")))
    con.print(t)
    if snap.get("streams"):
        s = Table("stream", "plan", "IPS", "p50 ms", "p99 ms", "ok", "errors", "dropped", "in flight", "state")
        ms = lambda x: "-" if x is None else f"{x * 1e3:.1f}"
        for st in snap["streams"]:
            f = st.get("frames", {})
            s.add_row(st["stream"], str(st.get("plan_id")), f"{st.get('ips') or 0:.2f}", ms(st.get("latency_p50_s")),
                      ms(st.get("latency_p99_s")), str(f.get("ok", 0)), str(f.get("error", 0)),
                      str(f.get("dropped", 0)), str(st.get("in_flight", 0)),
                      "running" if st.get("live") else "done" if st.get("done") else "silent")
        con.print(s)
        events = [e for st in snap["streams"] for e in st.get("events", [])]
        for e in events[-10:]:
            con.print(f"  +{e.get('t_s')}s {e.get('kind')}: {e.get('message')}")


@click.command()
@tls_options
@options.scheduler
@click.option("--json", "as_json", is_flag=True, help="print the snapshot as one JSON object")
def status(scheduler: str, as_json: bool) -> None:
    """Show the deployed plan, its devices (pieces, use, memory) and the streams running through it."""
    try:
        snap = fetch(scheduler)
    except (OSError, TypeError, RuntimeError) as e:
        why = connect_problem(scheduler, e)
        if why is None and not isinstance(e, OSError):
            raise
        raise click.ClickException(why or f"cannot reach the scheduler at {scheduler}: {e}") from None
    for st in snap.get("streams", []):
        st.pop("ips_history", None)
    if as_json:
        click.echo(json.dumps(snap, default=str))
    else:
        render(snap)
