"""mcdask's defaults in dask.config (``mcdask.yaml`` beside this file)."""

from __future__ import annotations

from pathlib import Path

import dask.config
import yaml

_PATH = Path(__file__).with_name("mcdask.yaml")


def register_defaults() -> None:
    with _PATH.open() as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)
    dask.config.refresh()
