"""Typed errors of the session logic.

Each is mapped to an HTTP status in one place (`controller/rest.py`) and to a signaling
ERROR code in one place (`SIGNALING_CODES`, below). "You asked wrongly" (InvalidRequest,
NotFound, Conflict) is kept apart from "a part failed" (Unavailable, PartFailed).
"""

from signaling.errors import ErrorCode


class NetServError(Exception):
    """Base of every error the session logic raises on purpose."""


class InvalidRequest(NetServError):
    """The request is malformed or names something that does not exist in it."""


class NotFound(NetServError):
    """The session or node named in the request does not exist."""


class UnknownNode(NotFound):
    """A node the request names is not a NetServ node the controller knows."""


class Conflict(NetServError):
    """The request is valid but collides with the current state (e.g. an overlapping flow)."""


class Unavailable(NetServError):
    """A needed part (switch, agent) is not connected right now; trying later may work."""


class NoNetServNode(Unavailable):
    """No NetServ node is ready on the flow's path (or at all), or none was selected."""


class PartFailed(NetServError):
    """A switch or agent refused or failed an operation; nothing was left half-made."""


# The signaling ERROR code of each error; the most specific class in an error's MRO wins.
# Anything else that escapes the session logic is INTERNAL_ERROR (503).
SIGNALING_CODES: dict[type[NetServError], ErrorCode] = {
    InvalidRequest: ErrorCode.INVALID_REQUEST,
    UnknownNode: ErrorCode.NO_NETSERV_NODE,
    NotFound: ErrorCode.UNKNOWN_SESSION,
    Conflict: ErrorCode.CONFLICT,
    NoNetServNode: ErrorCode.NO_NETSERV_NODE,
    Unavailable: ErrorCode.NODE_UNAVAILABLE,
    PartFailed: ErrorCode.PART_FAILED,
}


def signaling_code(exc: BaseException) -> ErrorCode:
    """Return the signaling ERROR code that answers `exc`."""
    return next(
        (SIGNALING_CODES[c] for c in type(exc).__mro__ if c in SIGNALING_CODES),
        ErrorCode.INTERNAL_ERROR,
    )
