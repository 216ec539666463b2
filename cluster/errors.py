"""Errors of the farm. Messages say what was received, what was expected and how to fix it."""

from __future__ import annotations

from mcdask.errors import McdaskError


class FarmSpecError(McdaskError, ValueError):
    """A farm spec or device kind is malformed (bad YAML, unknown kind, impossible share)."""


class FarmError(McdaskError, RuntimeError):
    """The farm cannot be brought up, inspected or taken down (a command failed, a farm is
    already up, a worker died while starting)."""
