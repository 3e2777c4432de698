"""One JSON-over-HTTP call, shared by every NetServ client: requesters, controller, agents."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class ClientError(Exception):
    """The peer refused a request (`status` set) or could not be reached (`status` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


def call_json(url: str, method: str = "GET", body: object = None, timeout: float = 5.0) -> Any:
    """Send `body` as JSON to `url`; return the decoded JSON reply.

    Raise ClientError with the HTTP status and the peer's `error` message when it
    refuses, or with status 0 when it cannot be reached or its reply is not JSON.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw).get("error") or raw.decode(errors="replace")
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace") or str(exc.reason)
        raise ClientError(exc.code, message) from None
    except (OSError, ValueError) as exc:
        raise ClientError(0, f"cannot reach {url}: {exc}") from None
