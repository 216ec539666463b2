"""``mcdask certs init|issue``: a deployment's CA and the certificates of its devices,
clients and scheduler (``mcdask.security.certs``)."""

from __future__ import annotations

from pathlib import Path

import click

from mcdask.errors import TLSError
from mcdask.security.certs import ROLES, init_ca, issue

DEFAULT_DIR = Path("~/.config/mcdask/certs")
_dir_option = click.option("--dir", "directory", type=click.Path(file_okay=False), default=str(DEFAULT_DIR),
                           show_default=True, help="where the CA and the certificates are kept")


@click.group(name="certs")
def certs():
    """Mutual TLS: a CA for the deployment, and a certificate per device, client and scheduler.

    A device's certificate names the device: the scheduler's gate gives a worker no work
    unless its certificate names it (start the scheduler with --preload mcdask.security.gate)."""


@certs.command()
@_dir_option
@click.option("--days", type=click.IntRange(1), default=3650, show_default=True, help="how long the CA is valid")
@click.option("--force", is_flag=True, help="replace an existing CA (its certificates stop working)")
def init(directory: str, days: int, force: bool) -> None:
    """Create the deployment's CA: ca.crt (give it to every device and client) and ca.key
    (keep it on this machine)."""
    try:
        cert, key = init_ca(Path(directory).expanduser(), days=days, force=force)
    except TLSError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"CA certificate: {cert}")
    click.echo(f"CA key:         {key} (keep it here; it issues every certificate)")


@certs.command(name="issue")
@click.argument("name")
@_dir_option
@click.option("--role", type=click.Choice(ROLES), default="device", show_default=True,
              help="device: a worker that must register as NAME; client: mcdask run/status/...; "
                   "scheduler: the scheduler")
@click.option("--days", type=click.IntRange(1), default=825, show_default=True)
def issue_command(name: str, directory: str, role, days: int) -> None:
    """Issue NAME.crt and NAME.key, signed by the CA. For a device, NAME is its worker name
    (`dask worker --name NAME`)."""
    path = Path(directory).expanduser()
    try:
        cert, key = issue(path, name, role, days=days)
    except TLSError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{role} certificate: {cert}")
    click.echo(f"{role} key:         {key}")
    click.echo(f"use: --tls-ca-file {path / 'ca.crt'} --tls-cert {cert} --tls-key {key}")
