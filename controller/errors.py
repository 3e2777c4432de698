"""Typed errors of the session logic.

Each is mapped to an HTTP status in one place (`controller/rest.py`) and, later, to a
signaling response code in one place too. "You asked wrongly" (InvalidRequest,
NotFound, Conflict) is kept apart from "a part failed" (Unavailable, PartFailed).
"""


class NetServError(Exception):
    """Base of every error the session logic raises on purpose."""


class InvalidRequest(NetServError):
    """The request is malformed or names something that does not exist in it."""


class NotFound(NetServError):
    """The session or node named in the request does not exist."""


class Conflict(NetServError):
    """The request is valid but collides with the current state (e.g. an overlapping flow)."""


class Unavailable(NetServError):
    """A needed part (switch, agent) is not connected right now; trying later may work."""


class PartFailed(NetServError):
    """A switch or agent refused or failed an operation; nothing was left half-made."""
