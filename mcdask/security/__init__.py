"""Authenticated devices: mutual TLS for mcdask's Dask clusters.

  certs    a certificate authority and the certificates it issues (``cryptography``): a
           device's certificate names the device, a client's and the scheduler's say their role
  tls      the client side: ``--tls-ca-file/--tls-cert/--tls-key`` (or ``mcdask.tls.*``) into
           Dask's ``distributed.comm.tls.*`` settings
  gate     the scheduler side: a scheduler plugin that refuses a worker whose certificate does
           not name the device it claims to be
  cli      ``mcdask certs init|issue``

May import ``mcdask.errors`` and, lazily, ``distributed``; imported by ``mcdask.runtime.deploy``
(the gate), the commands and ``cluster`` (the farm). ``import mcdask.security`` loads nothing.
"""
