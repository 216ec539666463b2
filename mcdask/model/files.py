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


#: the largest whole number a file may give (int64), and the largest number (a time in seconds or
#: a rate): beyond them a sum of a few overflows a float, and the number is a unit mistake anyway
MAX_WHOLE = 2**63 - 1
MAX_NUMBER = 1e15


def shown(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "true/false",
             type(None): "null", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def mapping(value, what: str) -> dict:
    """``value`` if it is a JSON object, else ValueError naming ``what``."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {_json_type(value)} {shown(value)}")
    return value


def listing(value, what: str) -> list | tuple:
    """``value`` if it is a JSON list (a tuple, once it has crossed msgpack), else ValueError."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} must be a JSON list, got {_json_type(value)} {shown(value)}")
    return value


def number(value, what: str, minimum: float = 0.0, maximum: float = MAX_NUMBER) -> float:
    """A finite number in ``[minimum, maximum]`` (not a bool), else ValueError naming ``what``."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (minimum <= value <= maximum and math.isfinite(value))):
        raise ValueError(f"{what} must be a finite number >= {minimum:g} and <= {maximum:g}, got {shown(value)}")
    return float(value)


def seconds(value, what: str) -> float:
    """A finite, non-negative number (a time), else ValueError naming ``what``."""
    return number(value, what)


def whole(value, what: str, minimum: int = 0) -> int:
    """A whole number >= ``minimum`` (not a float, not a bool), else ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_WHOLE:
        raise ValueError(f"{what} must be a whole number >= {minimum} and <= {MAX_WHOLE}, got {shown(value)}")
    return value


def count_key(key, what: str) -> int:
    """A JSON object's key that counts something (units): a whole number >= 1, as a string."""
    return whole(int(key) if isinstance(key, str) and key.isdecimal() else key, what, 1)


def name(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {shown(value)}")
    return value
