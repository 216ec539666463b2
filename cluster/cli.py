"""``mcdask farm up|status|cap|down``: the emulated device farm from the command line;
``kill|freeze|thaw|cut|heal DEVICE``: faults on one device; ``add|remove``: membership.

Progress goes to stderr; results go to stdout. With ``--json`` the last stdout line is one
JSON object (for ``status``: with a ``devices`` list; for a fault or ``remove``: the device's
record; for ``add``: ``devices``, the new ones). Errors are one line on stderr and exit 1.
"""

from __future__ import annotations

import json
import time

import click

from .devices import KINDS, FarmSpec, load_spec
from .errors import FarmError, FarmSpecError


def _err(msg: str) -> None:
    click.echo(msg, err=True)


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e))


@click.group(name="farm")
def farm():
    """Emulate a farm of small devices on this machine (needs root for namespaces and caps).

    Each device is a stock `dask worker` in its own network namespace, behind a link
    shaped with tc, with a cgroup CPU quota calibrated to its kind and a memory limit.
    """


@farm.command()
@click.option("-n", "--devices", "n", type=click.IntRange(1, 200), help="Number of devices of one kind.")
@click.option("--device", "kind", default="pi3", show_default=True,
              help=f"Kind of those devices (built-in: {', '.join(KINDS)}).")
@click.option("--spec", type=click.Path(exists=True, dir_okay=False),
              help="YAML farm spec with kinds and counts (see cluster/farms/mixed.yaml).")
@click.option("--wifi-mbit", type=float, help="Link bandwidth per device (default: the kind's, 62.24).")
@click.option("--rtt-ms", type=float, help="Device-to-device round trip (default: the kind's, 8.83).")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Run every device K times faster: K x CPU share, K x bandwidth, delay / K.")
@click.option("--port", type=int, default=8786, show_default=True, help="Scheduler port.")
@click.option("--dashboard-port", type=int, default=8787, show_default=True)
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Calibrate every device: time AlexNet on it under its quotas and correct its compute "
                   "share until it is within 5% of its kind's time (up to five rounds).")
@click.option("--calibration-span", "calibration_span_s", type=click.FloatRange(min=0.5), default=3.0,
              show_default=True, metavar="SECONDS",
              help="How long each calibration round times every device. This host's speed swings 1.7x over 3-s "
                   "windows and 1.3x over 30-s ones (python -m bench.host_noise): longer rounds calibrate a farm "
                   "for measurements closer, at the cost of its start (the bench's farm: 15).")
@click.option("--host-time-s", type=float,
              help="Use this host AlexNet time instead of measuring it (for repeat runs).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
              help="Extra environment for every worker, e.g. DASK_DISTRIBUTED__COMM__COMPRESSION=lz4.")
@click.option("--no-fallback", is_flag=True, help="Fail instead of starting uncapped local workers.")
@click.option("--timeout", "timeout_s", type=float, default=600, show_default=True,
              help="Seconds to wait for every worker to register.")
@click.option("--tls", "use_tls", is_flag=True,
              help="Mutual TLS: a CA for the farm, a certificate per device naming it, the scheduler on tls:// "
                   "admitting only workers whose certificate names them; `farm status --json` gives the "
                   "client's certificate paths under 'tls'.")
@click.option("--backend", type=click.Choice(["litert", "tensorflow"]), default=None,
              help="The runtime the devices get ready and put under their compute quota: LiteRT's model thread "
                   "(then no device imports TensorFlow), or TensorFlow's threads. Deploy on the same backend "
                   "(`mcdask run --backend`): the other one's kernels would run outside the quota. "
                   "[default: mcdask.worker.backend, litert]")
@click.option("--json", "as_json", is_flag=True, help="Print the farm status as JSON (last line).")
def up(n, kind, spec, wifi_mbit, rtt_ms, time_scale, port, dashboard_port, verify, calibration_span_s, host_time_s,
       env, no_fallback, timeout_s, use_tls, backend, as_json):
    """Start a scheduler and N capped, shaped workers; print the scheduler address."""
    from . import farm as f

    try:
        if spec and n:
            raise FarmSpecError("give either --spec or --devices, not both")
        if spec:
            farm_spec = load_spec(spec).with_link(wifi_mbit, rtt_ms)
        elif n:
            farm_spec = FarmSpec.uniform(n, kind, wifi_mbit, rtt_ms)
        else:
            raise FarmSpecError("say how many devices: --devices N [--device pi3], or --spec FILE")
        extra = {}
        for item in env:
            k, sep, v = item.partition("=")
            if not sep or not k:
                raise FarmSpecError(f"--env expects KEY=VALUE, got {item!r}")
            extra[k] = v
        st = f.up(farm_spec, time_scale=time_scale, port=port, dashboard_port=dashboard_port,
                  verify=verify, extra_env=extra, host_time_s=host_time_s, start_timeout_s=timeout_s,
                  allow_fallback=not no_fallback, use_tls=use_tls, backend=backend,
                  calibration_span_s=calibration_span_s, log=_err)
    except (FarmError, FarmSpecError) as e:
        _fail(e)
    if not st["cpu_capped"] or not st["network_shaped"]:
        _err("NOTE: CPU and network are NOT capped in this farm "
             f"({st.get('not_capped_reason') or 'caps lifted'}).")
    click.echo(f"scheduler: {st['scheduler']}")
    click.echo(f"dashboard: {st['dashboard']}")
    if st.get("tls"):
        click.echo("client TLS: " + " ".join(f"--tls-{k.replace('_', '-')} {v}" for k, v in st["tls"].items()))
    if as_json:
        click.echo(json.dumps(st))


@farm.command()
@click.option("--json", "as_json", is_flag=True, help="Last stdout line: one JSON object with 'devices'.")
@click.option("--check", is_flag=True, help="Also ask the scheduler which devices are registered.")
def status(as_json, check):
    """List the farm's devices with their CPU, memory and link caps."""
    from . import farm as f

    st = f.status(query_scheduler=check)
    if as_json:
        click.echo(json.dumps(st))
        return
    if not st["devices"]:
        click.echo("no farm is up" + (f"; leftovers: {st['leftovers']} (run `mcdask farm down`)"
                                      if st.get("leftovers") else ""))
        return
    _print_status(st)


def _print_status(st: dict) -> None:
    from rich.table import Table

    cal = st.get("calibration") or {}
    head = (f"farm {st['phase']}: mode {st['mode']}, scheduler {st['scheduler']}, time-scale {st['time_scale']:g}, "
            f"backend {st.get('backend', 'tensorflow')}")
    if cal.get("host_time_s"):
        head += f", host AlexNet {cal['host_time_s'] * 1e3:.1f} ms ({cal.get('command', '')})"
    click.echo(head)
    table = Table("device", "ip", "state", "compute share", "quota/period us", "device share", "quota/period us",
                  "AlexNet s target/verified", "memory", "Mbit/s", "RTT ms", box=None, pad_edge=False)
    for d in st["devices"]:
        q, dq = d.get("cpu_quota_now"), d.get("device_quota_now")
        target = f"{d['target_alexnet_s']:.3f}" if d.get("target_alexnet_s") else "-"
        verified = f"{d['verified_alexnet_s']:.3f}" if d.get("verified_alexnet_s") else "-"
        table.add_row(d["name"], d.get("ip", ""), _state_word(d),
                      f"{d['cpu_share']:.4f}" if d.get("cpu_share") else "uncapped",
                      f"{q['quota_us']}/{q['period_us']}" if q else "none",
                      f"{d['device_share']:.4f}" if d.get("device_share") else "uncapped",
                      f"{dq['quota_us']}/{dq['period_us']}" if dq else "none", f"{target}/{verified}",
                      d["memory_limit"], f"{d['link_mbit']:g}" if st["network_shaped"] else "unshaped",
                      f"{d['rtt_ms']:.3g}" if st["network_shaped"] else "-")
    _print_table(table)
    applied = f" (at {st['cpu_cap_applied']})." if st.get("cpu_cap_applied") else "."
    model = "LiteRT model thread" if st.get("backend") == "litert" else "TensorFlow threads"
    click.echo(f"Compute: the device's {model}; device: all of it (compute + Dask's Python). "
               "RTT is device<->device; host<->device is half of it. CPU quotas are applied after the "
               "workers got their runtime ready" + applied)
    if not st["cpu_capped"]:
        why = (f" ({st['not_capped_reason']})" if st.get("not_capped_reason")
               else " (lifted with `mcdask farm cap --off`)")
        click.echo("NOTE: CPU quotas are NOT applied" + why)
    if registered := st.get("registered"):
        click.echo(f"registered with the scheduler: {', '.join(registered)}")


def _print_table(table) -> None:
    """A rich table on stdout: fitted to a terminal, at its natural width into a pipe or file."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=console.measure(table, options=console.options.update_width(10_000)).maximum)
    console.print(table)


def _state_word(d: dict) -> str:
    """``running``, ``frozen``, ``cut``, ``killed``; ``frozen+cut`` when both."""
    return d["state"] + ("+cut" if d["state"] == "frozen" and not d["link_up"] else "")


def _device_line(d: dict, what: str, took_s: float) -> str:
    """One line saying what happened to a device and the state it is in now."""
    how = f" (frozen by {d['frozen_by']})" if d.get("frozen_by") else ""
    return f"{d['name']}: {what} in {took_s:.2f} s; state {_state_word(d)}{how}"


FAULTS = {
    "kill": ("killed", "SIGKILL the device's worker process: a device unplugged (it stays dead)."),
    "freeze": ("frozen", "Hang the whole device: its freezer cgroup stops every thread (else SIGSTOP)."),
    "thaw": ("thawed", "Let a frozen device run again."),
    "cut": ("link cut", "Take the device's link down both ways (both TAPs down); TCP connections wait."),
    "heal": ("link healed", "Bring a cut link up again and wait until the host reaches the device."),
}


def _fault_command(action: str) -> click.Command:
    done, help_ = FAULTS[action]

    @farm.command(name=action, help=help_)
    @click.argument("device")
    @click.option("--json", "as_json", is_flag=True, help="Last stdout line: the device's status record.")
    def command(device, as_json):
        from . import faults

        t0 = time.monotonic()
        try:
            d = getattr(faults, action)(device)
        except FarmError as e:
            _fail(e)
        click.echo(_device_line(d, done, time.monotonic() - t0))
        if as_json:
            click.echo(json.dumps(d))
    return command


for _action in FAULTS:
    _fault_command(_action)


@farm.command()
@click.option("-n", "--devices", "k", type=click.IntRange(1, 200), required=True, help="How many devices join.")
@click.option("--device", "kind", help="Their kind (default: the farm's first kind); one the farm has keeps "
                                       "its calibrated CPU share.")
@click.option("--timeout", "timeout_s", type=float, default=600, show_default=True,
              help="Seconds to wait for the new workers to register.")
@click.option("--json", "as_json", is_flag=True, help="Last stdout line: {'devices': [the new devices]}.")
def add(k, kind, timeout_s, as_json):
    """Join K new devices to the running farm (same caps, shaping and share as their kind)."""
    from . import membership

    t0 = time.monotonic()
    try:
        new = membership.add(k, kind, timeout_s=timeout_s, log=_err)
    except (FarmError, FarmSpecError) as e:
        _fail(e)
    took = time.monotonic() - t0
    for d in new:
        click.echo(_device_line(d, f"joined at {d['ip']}", took))
    if as_json:
        click.echo(json.dumps({"devices": new}))


@farm.command()
@click.argument("device")
@click.option("--timeout", "timeout_s", type=float, default=60, show_default=True,
              help="Seconds to wait for the scheduler to retire the worker.")
@click.option("--json", "as_json", is_flag=True, help="Last stdout line: the device's last record.")
def remove(device, timeout_s, as_json):
    """Retire DEVICE through the scheduler, then remove its process, namespace, links and cgroups."""
    from . import membership

    t0 = time.monotonic()
    try:
        d = membership.remove(device, timeout_s=timeout_s, log=_err)
    except FarmError as e:
        _fail(e)
    click.echo(f"{d['name']}: removed in {time.monotonic() - t0:.2f} s ({d['leave']})")
    if as_json:
        click.echo(json.dumps(d))


@farm.command()
@click.option("--on/--off", default=True, show_default=True,
              help="--off lifts every CPU quota (e.g. while slices are built); --on restores them.")
@click.option("--json", "as_json", is_flag=True)
def cap(on, as_json):
    """Apply or lift the devices' CPU quotas (memory limits and links stay)."""
    from . import farm as f

    try:
        st = f.set_caps(on)
    except FarmError as e:
        _fail(e)
    click.echo(f"CPU quotas {'applied' if on else 'lifted'} on {len(st['devices'])} devices")
    if as_json:
        click.echo(json.dumps(st))


@farm.command()
@click.option("--json", "as_json", is_flag=True)
def down(as_json):
    """Remove every namespace, link, qdisc, cgroup and process of the farm (safe to repeat)."""
    from . import farm as f

    try:
        removed = f.down(log=_err)
    except FarmError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps({"removed": removed}))
