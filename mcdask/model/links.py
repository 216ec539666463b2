"""Links of a profile (``mcdask.model.profile``): the time model of one message, and a
per-pair override. Plain data; imports neither TensorFlow nor Dask."""

from __future__ import annotations

from dataclasses import dataclass

from mcdask.errors import ProfileError
from mcdask.model.files import mapping, name, number, seconds, shown


@dataclass(frozen=True)
class LinkModel:
    """Time of one message: ``latency_s + bytes / bandwidth_Bps``."""

    latency_s: float
    bandwidth_Bps: float

    def __post_init__(self) -> None:
        if not (self.latency_s >= 0 and self.bandwidth_Bps > 0):
            raise ProfileError(f"link needs latency_s >= 0 and bandwidth_Bps > 0; got "
                               f"latency_s={self.latency_s!r}, bandwidth_Bps={self.bandwidth_Bps!r}")

    def time_s(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bandwidth_Bps

    def to_dict(self) -> dict:
        return {"latency_s": self.latency_s, "bandwidth_Bps": self.bandwidth_Bps}

    @classmethod
    def from_dict(cls, d: dict) -> LinkModel:
        try:
            d = mapping(d, "a link")
            return cls(seconds(d["latency_s"], "a link's latency_s"),
                       number(d["bandwidth_Bps"], "a link's bandwidth_Bps", minimum=1.0))
        except KeyError as e:
            raise ProfileError(f"malformed link {shown(d)}: missing key {e}; a link has latency_s and "
                               "bandwidth_Bps") from None
        except (TypeError, ValueError) as e:
            raise ProfileError(f"malformed link: {e}") from None


@dataclass(frozen=True)
class Link:
    """A per-pair override (undirected): the link between devices ``a`` and ``b``."""

    a: str
    b: str
    model: LinkModel

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, **self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Link:
        try:
            d = mapping(d, "a link")
            return cls(name(d["a"], "a link's end a"), name(d["b"], "a link's end b"), LinkModel.from_dict(d))
        except KeyError as e:
            raise ProfileError(f"malformed link {shown(d)}: missing key {e}; a link has a, b, latency_s, "
                               "bandwidth_Bps") from None
        except ValueError as e:
            raise ProfileError(f"malformed link: {e}") from None
