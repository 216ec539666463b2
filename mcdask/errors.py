"""mcdask's errors. Messages say what was received, what was expected and how to fix it."""


class McdaskError(Exception):
    """Base of every error mcdask raises on purpose."""


class PlanError(McdaskError, ValueError):
    """A plan is malformed or does not fit its workload."""


class InfeasiblePlanError(PlanError):
    """No assignment fits the devices (memory); the message names the layer and its need."""


class ProfileError(McdaskError, ValueError):
    """A device or link profile is missing, malformed or inconsistent."""


class WeightsError(McdaskError, ValueError):
    """A weights file lacks a layer, or a layer's weights have the wrong shape."""


class SliceNotLoadedError(McdaskError, RuntimeError):
    """A task reached a worker that does not hold the slice it needs."""


class FrameError(McdaskError, ValueError):
    """One input frame is unusable (shape, dtype, NaN); the stream goes on without it."""


class SourceError(McdaskError, ValueError):
    """An input source cannot be opened or read."""


class DeploymentError(McdaskError, RuntimeError):
    """The cluster cannot run the plan (too few workers, a worker failed to build its slices)."""


class StreamStopped(McdaskError, RuntimeError):
    """A stream cannot go on (the scheduler is gone, no plan fits the devices left); the
    message says why. Frames answered before it are complete."""


class TLSError(McdaskError, ValueError):
    """A certificate, key or CA is missing, unreadable or does not fit (``mcdask.security``)."""


#: Exit status of the ``mcdask`` command, defined here once (README "Use", docs/bad-inputs.md).
EXIT_OK = 0          # done
EXIT_ERROR = 1       # bad input, a plan that could not be deployed, any other error
EXIT_USAGE = 2       # the command line itself is wrong (click's usage errors)
EXIT_STOPPED = 3     # a stream stopped early: scheduler lost, no plan fits the devices left


def exit_code(error: BaseException) -> int:
    """The exit status for an error that ends the command."""
    return EXIT_STOPPED if isinstance(error, StreamStopped) else EXIT_ERROR
