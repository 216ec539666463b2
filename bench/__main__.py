"""``python -m bench`` runs ``mcdask bench``."""

from .cli import bench

bench()
