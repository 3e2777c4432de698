"""The one JSON-over-HTTP call of every NetServ client: requesters, the controller
calling agents, agents registering with the controller."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol


class ClientError(Exception):
    """The peer refused a request (`status` set) or could not be reached (`status` 0).

    An answer that should be signed by the peer and is not counts as no answer
    (status 0): whoever sent it is not the peer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class Signer(Protocol):
    """Signs requests and checks answers (`controller.auth.Signer` is one)."""

    def sign(self, method: str, target: str, body: bytes) -> dict[str, str]:
        """Return the headers that sign a request for `target` (path and query)."""

    def check(
        self, sent: Mapping[str, str], status: int, headers: Mapping[str, str], body: bytes
    ) -> None:
        """Raise ValueError unless the answer is the peer's to the request signed by `sent`."""


def call_json(
    url: str,
    method: str = "GET",
    body: object = None,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
    signer: Signer | None = None,
) -> Any:
    """Send `body` as JSON to `url`, with `headers`; return the decoded JSON reply.

    With `signer`, the request is signed and the answer, refusals included, must be
    signed by the peer. Raise ClientError with the HTTP status and the peer's `error`
    message when it refuses, or with status 0 when it cannot be reached, its reply is
    not JSON, or the reply is not signed as `signer` expects.
    """
    data = b"" if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if signer is not None:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sent.update(signer.sign(method, target or "/", data))
    req = urllib.request.Request(url, data=data if body is not None else None, method=method)
    for name, value in sent.items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            _check(signer, sent, resp.status, resp.headers, raw, url)
            return json.loads(raw or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw).get("error") or raw.decode(errors="replace")
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace") or str(exc.reason)
        _check(signer, sent, exc.code, exc.headers, raw, url, message)
        raise ClientError(exc.code, message) from None
    except ClientError:
        raise
    except (OSError, ValueError) as exc:
        raise ClientError(0, f"cannot reach {url}: {exc}") from None


def _check(
    signer: Signer | None,
    sent: Mapping[str, str],
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    url: str,
    message: str = "",
) -> None:
    """Raise ClientError(0) when `signer` expects a signed answer and this one is not."""
    if signer is None:
        return
    try:
        signer.check(sent, status, headers, raw)
    except ValueError as exc:
        said = f" ({status}: {message})" if message else f" ({status})"
        raise ClientError(0, f"no answer from the peer at {url}: {exc}{said}") from None
