"""Typed errors of the session logic, their signaling codes, and the count of refusals.

Each error is mapped to an HTTP status in one place (`controller/rest.py`, STATUS) and
to a signaling ERROR code in one place (SIGNALING_CODE, below). "You asked wrongly"
(InvalidRequest, NotFound, Conflict), "you may not" (Unauthenticated, Forbidden,
QuotaExceeded) and "a part failed" (Unavailable, PartFailed) are kept apart. Every
class has a `code`, a short name that the REST answer carries and refusals are counted
under (`Rejections`).
"""

from __future__ import annotations

import logging
from collections import Counter

from signaling.errors import ErrorCode, SignalingProtocolError

log = logging.getLogger("netserv.rejections")


class NetServError(Exception):
    """Base of every error the session logic raises on purpose."""

    code = "error"


class InvalidRequest(NetServError):
    """The request is malformed or names something that does not exist in it."""

    code = "invalid_request"


class NotFound(NetServError):
    """The session or node named in the request does not exist."""

    code = "not_found"


class UnknownNode(NotFound):
    """A node the request names is not a NetServ node the controller knows."""

    code = "unknown_node"


class Conflict(NetServError):
    """The request is valid but collides with the current state (e.g. an overlapping flow)."""

    code = "conflict"


class Unavailable(NetServError):
    """A needed part (switch, agent) is not connected right now; trying later may work."""

    code = "unavailable"


class NoNetServNode(Unavailable):
    """No NetServ node is ready on the flow's path (or at all), or none was selected."""

    code = "no_netserv_node"


class PartFailed(NetServError):
    """A switch or agent refused or failed an operation; nothing was left half-made."""

    code = "part_failed"


class Unauthenticated(NetServError):
    """The caller did not prove who it is: no credentials, or credentials no one holds."""

    code = "unauthenticated"


class UnknownRequester(Unauthenticated):
    """The requester named (or the key id given) is not in the policy."""

    code = "unknown_requester"


class Forbidden(NetServError):
    """The caller is known, but the policy does not let it do this."""

    code = "forbidden"


class NotEndpoint(Forbidden):
    """The flow claimed is not one of the requester's: no endpoint in its prefixes, or
    none that the return-routability check can challenge."""

    code = "not_endpoint"


class NotRoutable(NotEndpoint):
    """The claimed endpoint did not answer the return-routability check in time (or
    not from where it is attached): the claim does not come from that endpoint."""

    code = "not_routable"


class ModuleNotAllowed(Forbidden):
    """A module of the chain is not one the policy lets this requester use."""

    code = "module_not_allowed"


class NotOwner(Forbidden):
    """The session belongs to another requester."""

    code = "not_owner"


class QuotaExceeded(NetServError):
    """The requester already holds as many sessions or flows as its quota allows."""

    code = "quota_exceeded"


class PolicyError(NetServError):
    """The policy file cannot be used; the message names the file, line and key."""

    code = "invalid_policy"


# The ERROR code a signaling answer carries for each error (the most specific class of
# an exception's MRO found here wins). A session another requester owns does not exist
# in the asker's name space (sessions are named by requester and id), hence 400.
SIGNALING_CODE: dict[type[NetServError], ErrorCode] = {
    InvalidRequest: ErrorCode.INVALID_REQUEST,
    NotFound: ErrorCode.UNKNOWN_SESSION,
    UnknownNode: ErrorCode.NO_NETSERV_NODE,
    Conflict: ErrorCode.CONFLICT,
    Unavailable: ErrorCode.NODE_UNAVAILABLE,
    NoNetServNode: ErrorCode.NO_NETSERV_NODE,
    PartFailed: ErrorCode.PART_FAILED,
    Unauthenticated: ErrorCode.BAD_AUTH,
    UnknownRequester: ErrorCode.UNKNOWN_REQUESTER,
    Forbidden: ErrorCode.NOT_ENDPOINT,
    NotEndpoint: ErrorCode.NOT_ENDPOINT,
    NotRoutable: ErrorCode.NOT_ROUTABLE,
    ModuleNotAllowed: ErrorCode.MODULE_NOT_ALLOWED,
    NotOwner: ErrorCode.UNKNOWN_SESSION,
    QuotaExceeded: ErrorCode.QUOTA_EXCEEDED,
}


def signaling_code(exc: BaseException) -> ErrorCode:
    """Return the signaling ERROR code that answers `exc`: INTERNAL_ERROR for anything
    that is not a NetServError (a bug, whose details stay in the log)."""
    return next(
        (SIGNALING_CODE[c] for c in type(exc).__mro__ if c in SIGNALING_CODE),
        ErrorCode.INTERNAL_ERROR,
    )


class Rejections:
    """How many requests each transport refused, by error code; each refusal is logged.

    Kept by the session service so both transports count into one place; the operator
    reads it at GET /netserv/policy.
    """

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(
        self, exc: NetServError | SignalingProtocolError, transport: str, requester: str | None
    ) -> str:
        """Count and log the refusal `exc` of a request that came over `transport`
        from `requester` (None: not known); return the code it was counted under: the
        error's code name, or for the signaling codec's and freshness guard's refusals
        their ErrorCode's name in lower case (bad_auth, replay, stale_timestamp, ...)."""
        if isinstance(exc, SignalingProtocolError):
            code, doubtful = exc.code.name.lower(), exc.code >= ErrorCode.BAD_AUTH
        else:
            code, doubtful = exc.code, isinstance(exc, Unauthenticated | Forbidden)
        self._counts[(transport, code)] += 1
        level = logging.WARNING if doubtful else logging.INFO
        log.log(level, "refused (%s, %s) from %s: %s", transport, code, requester or "?", exc)
        return code

    def count(self, transport: str, code: str) -> int:
        """Return how many requests over `transport` were refused with `code`."""
        return self._counts[(transport, code)]

    def to_json(self) -> dict[str, dict[str, int]]:
        """Return the counts as {transport: {code: count}}, codes sorted."""
        out: dict[str, dict[str, int]] = {}
        for (transport, code), n in sorted(self._counts.items()):
            out.setdefault(transport, {})[code] = n
        return out
