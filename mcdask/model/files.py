"""Reading the JSON files people hand mcdask (plans, profiles) and checking their numbers, so
that a bad file gets one clear message naming the file and the value, never a traceback."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_object(path: str | Path, what: str, error: type[Exception]) -> dict:
    """The JSON object in ``path``; raises ``error`` saying why not (missing, a folder, not
    JSON, NaN/Infinity, not an object)."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{path}: is a folder; expected a {what} file (JSON)")
    try:
        data = json.loads(p.read_text(), parse_constant=_no_constants)
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a {what} file (not text)") from None
    except ValueError as e:
        raise error(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} file holds one JSON object, got a JSON {type(data).__name__}")
    return data


def load(path: str | Path, what: str, error: type[Exception], from_dict):
    """``from_dict`` of the JSON object in ``path``; its errors name the file."""
    data = read_object(path, what, error)
    try:
        return from_dict(data)
    except error as e:
        raise error(f"{path}: {e}") from None


def seconds(value, what: str) -> float:
    """A finite, non-negative number (a time), else ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def whole(value, what: str, minimum: int = 0) -> int:
    """A whole number >= ``minimum`` (not a float, not a bool), else ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return value


def name(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value
