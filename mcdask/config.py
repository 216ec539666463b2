"""mcdask's defaults in dask.config (``mcdask.yaml`` beside this file)."""

from __future__ import annotations

from pathlib import Path

import dask.config
import yaml

_PATH = Path(__file__).with_name("mcdask.yaml")


def register_defaults() -> None:
    with _PATH.open() as f:
        defaults = yaml.safe_load(f)
    # update_defaults only fills keys not yet set; a refresh() here would also drop the
    # config a nanny hands to its worker process (mcdask.worker.intra-op-threads, say)
    dask.config.update_defaults(defaults)
