"""The client side of mutual TLS: which CA, certificate and key a command connects with.

``tls_options`` adds ``--tls-ca-file/--tls-cert/--tls-key`` to a click command; unset, each
falls back to ``mcdask.tls.*`` in the Dask config. ``use`` checks the three files (they go
together) and puts them into Dask's own settings (``distributed.comm.tls.ca-file``,
``distributed.comm.tls.client.*``, ``distributed.comm.require-encryption``), so every Dask
client this process makes connects over TLS with them.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass

import click
import dask.config

from mcdask.errors import TLSError

#: option name -> mcdask config key
KEYS = {"tls_ca_file": "ca-file", "tls_cert": "cert", "tls_key": "key"}


@dataclass(frozen=True)
class TLSFiles:
    ca_file: str
    cert: str
    key: str

    def check(self) -> TLSFiles:
        """Load the three files as a TLS context would; one clear error naming a bad one."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        try:
            ctx.load_verify_locations(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise TLSError(f"--tls-ca-file {self.ca_file}: not a readable CA certificate ({e})") from None
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as e:
            raise TLSError(f"--tls-cert {self.cert} / --tls-key {self.key}: not a readable certificate and "
                           f"its key ({e})") from None
        return self

    def dask_config(self) -> dict:
        """The Dask settings that make a client connect with these files."""
        return {"distributed.comm.tls.ca-file": self.ca_file, "distributed.comm.tls.client.cert": self.cert,
                "distributed.comm.tls.client.key": self.key, "distributed.comm.require-encryption": True}

    def to_dict(self) -> dict:
        return {"ca_file": self.ca_file, "cert": self.cert, "key": self.key}


def resolve(ca_file: str | None = None, cert: str | None = None, key: str | None = None) -> TLSFiles | None:
    """The TLS files to use: each given one, else ``mcdask.tls.*``; None when none is set
    (plain TCP); an error naming what is missing when only some are."""
    given = {"tls_ca_file": ca_file, "tls_cert": cert, "tls_key": key}
    values = {k: v if v else dask.config.get(f"mcdask.tls.{KEYS[k]}", None) for k, v in given.items()}
    if not any(values.values()):
        return None
    missing = [k for k, v in values.items() if not v]
    if missing:
        names = ", ".join(f"--{k.replace('_', '-')} (mcdask.tls.{KEYS[k]})" for k in missing)
        raise TLSError(f"--tls-ca-file, --tls-cert and --tls-key go together; missing {names}")
    return TLSFiles(str(values["tls_ca_file"]), str(values["tls_cert"]), str(values["tls_key"])).check()


def use(files: TLSFiles | None) -> None:
    """Make every Dask client of this process connect with ``files`` (nothing when None)."""
    if files is not None:
        dask.config.set(files.dask_config())


def check_address(address: str) -> None:
    """Before connecting: a ``tls://`` address needs TLS settings, and TLS settings need a
    ``tls://`` address (Dask would fail later, and less clearly)."""
    configured = bool(dask.config.get("distributed.comm.tls.ca-file", None)
                      and dask.config.get("distributed.comm.tls.client.cert", None))
    if address.startswith("tls://") and not configured:
        raise TLSError(f"{address} is a TLS address but no TLS settings are given: pass --tls-ca-file, --tls-cert "
                       "and --tls-key (or set mcdask.tls.*)")
    if configured and dask.config.get("distributed.comm.require-encryption", False) \
            and not address.startswith("tls://"):
        raise TLSError(f"TLS settings are given but {address} is not a TLS address; use tls://HOST:PORT")


def tls_options(command):
    """Add ``--tls-ca-file/--tls-cert/--tls-key`` to a click command; put it right under
    ``@click.command()``. The command runs with Dask's TLS settings in place; its
    ``--scheduler`` address, if it has one, is checked against them."""

    @functools.wraps(command)
    def wrapper(*args, tls_ca_file, tls_cert, tls_key, **kwargs):
        try:
            use(resolve(tls_ca_file, tls_cert, tls_key))
            if kwargs.get("scheduler"):
                check_address(kwargs["scheduler"])
        except TLSError as e:
            raise click.ClickException(str(e)) from None
        return command(*args, **kwargs)

    options = [
        click.option("--tls-ca-file", type=click.Path(dir_okay=False), default=None,
                     help="the deployment's CA certificate (mutual TLS) [default: mcdask.tls.ca-file]"),
        click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
                     help="this client's certificate, issued by that CA [default: mcdask.tls.cert]"),
        click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
                     help="this client's private key [default: mcdask.tls.key]"),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def connect_problem(address: str, e: Exception) -> str | None:
    """One line saying how TLS kept a client from connecting to ``address`` (what Dask raised
    is ``e``), or None when TLS is not the reason."""
    if isinstance(e, TypeError) and address.startswith("tls://"):
        return (f"{address} is a TLS address but no TLS settings are given: pass --tls-ca-file, --tls-cert and "
                "--tls-key (or set mcdask.tls.*)")
    if isinstance(e, RuntimeError) and "encryption required" in str(e):
        return f"TLS settings are given but {address} is not a TLS address; use tls://HOST:PORT"
    if isinstance(e, OSError) and "certificate" in str(e).lower():
        return (f"the TLS handshake with {address} failed: the scheduler's CA is not --tls-ca-file's, or it does "
                f"not accept this client's certificate ({e})")
    return None
