"""The requester policy: who may ask for which flows, modules and how many sessions.

`load_policy(path)` reads a TOML file (docs/policy.md has its format) into a frozen
`Policy`, or raises PolicyError naming the file, the line and the key at fault. Pure
apart from reading the policy file and the key and token files it names: the session
service asks `Policy.authorize` before it reserves anything, the REST layer maps a
bearer token to a requester with `Policy.rest_requester`, and the signaling handler
finds a requester's HMAC key with `Policy.key`. Its `[modules]` table says which
bundles the module repository takes and sessions may load (`ModuleTrust`).

Secrets never leave this module in clear: tokens are kept as SHA-256 digests and
compared in constant time, keys are left out of every repr and JSON view.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union

from controller.errors import (
    ModuleNotAllowed,
    NotEndpoint,
    NotOwner,
    PolicyError,
    QuotaExceeded,
    UnknownRequester,
)
from nodes.signing import SignatureError, public_key, read_public_key
from signaling import wire
from signaling.auth import MIN_KEY_SIZE

if TYPE_CHECKING:
    from controller.match import FlowMatch
    from controller.requests import SessionRequest
    from controller.sessions import Session

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # noqa: UP007

OPERATOR = "operator"  # the operator's identity: every right, no quota
ANY = "any"  # prefixes = "any": every flow, also one that names no address
ALL = "all"  # modules = "all"
DEFAULT_MAX_SESSIONS = 16
DEFAULT_MAX_FLOWS = 16
MIN_TOKEN_SIZE = 16  # bytes of a token read from a file
ADDRESS_FIELDS = ("ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst")  # src first: see claimed_endpoint

_OPERATOR_KEYS = frozenset({"keys", "tokens"})
_REQUESTER_KEYS = frozenset({"keys", "tokens", "prefixes", "modules", "max_sessions", "max_flows"})
_TOP_KEYS = frozenset({"operator", "requesters", "modules"})
_MODULES_KEYS = frozenset({"trusted_publishers", "allow_unsigned"})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Requester:
    """One requester's rights. `prefixes` None: any flow; `modules` None: every module;
    a quota None: no limit (the operator's)."""

    id: str
    keys: Mapping[int, bytes] = field(default_factory=lambda: MappingProxyType({}))
    token_hashes: tuple[bytes, ...] = ()
    prefixes: tuple[Network, ...] | None = None
    modules: frozenset[str] | None = None
    max_sessions: int | None = None
    max_flows: int | None = None

    def __repr__(self) -> str:  # never print a secret
        return f"Requester({self.id!r}, keys={sorted(self.keys)}, tokens={len(self.token_hashes)})"

    def to_json(self) -> dict[str, object]:
        """Return the requester's rights as JSON, without any secret."""
        return {
            "id": self.id,
            "keys": sorted(self.keys),
            "tokens": len(self.token_hashes),
            "prefixes": ANY if self.prefixes is None else [str(p) for p in self.prefixes],
            "modules": ALL if self.modules is None else sorted(self.modules),
            "max_sessions": self.max_sessions,
            "max_flows": self.max_flows,
        }


@dataclass(frozen=True)
class ModuleTrust:
    """Which module bundles the repository takes and sessions may load: those signed by
    one of `trusted_publishers` (public keys, "ed25519:<base64>"), and unsigned ones
    (or ones signed by a key not listed) only when `allow_unsigned`. A signature that
    does not verify is refused whatever this says (`controller/repository.py`)."""

    trusted_publishers: tuple[str, ...] = ()
    allow_unsigned: bool = True

    def trusts(self, key: str) -> bool:
        """Return True when `key` is a trusted publisher's public key."""
        return key in self.trusted_publishers

    def to_json(self) -> dict[str, object]:
        return {
            "trusted_publishers": list(self.trusted_publishers),
            "allow_unsigned": self.allow_unsigned,
        }


def flows_of(session: Session) -> int:
    """Return the detour flow rules `session` holds in the switches: one, at its node (a
    request served at several nodes is a group of sessions, one per node)."""
    return 1


def sessions_of(sessions: Iterable[Session]) -> int:
    """Return how many sessions `sessions` are for the quota: a group counts once."""
    return len({s.group for s in sessions})


def match_addresses(match: FlowMatch) -> list[tuple[str, Network]]:
    """Return the (field, network) of every address field of `match`, sources first."""
    fields = dict(match.fields)
    out = []
    for name in ADDRESS_FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, tuple):  # (address, mask): parse_match makes masks contiguous
            length = bin(int(ipaddress.ip_address(value[1]))).count("1")
            out.append((name, ipaddress.ip_network((value[0], length))))
        else:
            out.append((name, ipaddress.ip_network(value)))
    return out


def _inside(net: Network, prefixes: Iterable[Network]) -> bool:
    return any(net.version == p.version and net.subnet_of(p) for p in prefixes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Policy:
    """Every requester by id, the operator among them; `source` the file it came from
    (None: no policy file, the operator is the only requester)."""

    requesters: Mapping[str, Requester]
    source: Path | None = None
    modules: ModuleTrust = field(default_factory=ModuleTrust)  # the [modules] table

    @property
    def configured(self) -> bool:
        """Return True when the policy came from a file (requesters must prove who they are)."""
        return self.source is not None

    def requester(self, requester: str) -> Requester:
        """Return the rights of `requester`; raise UnknownRequester."""
        try:
            return self.requesters[requester]
        except KeyError:
            raise UnknownRequester(f"no requester {requester!r} in the policy") from None

    def key(self, requester: str, key_id: int) -> bytes | None:
        """Return the secret of `requester`'s key number `key_id`, None if there is none."""
        who = self.requesters.get(requester)
        return None if who is None else who.keys.get(key_id)

    def rest_requester(self, token: str) -> str | None:
        """Return the id of the requester whose REST token is `token`, None if no one's."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for who in self.requesters.values():  # every hash compared: no early exit to time
            for stored in who.token_hashes:
                if hmac.compare_digest(digest, stored):
                    found = who.id
        return found

    def authorize(
        self,
        requester: str,
        request: SessionRequest,
        sessions: Iterable[Session],
        flows: int = 1,
    ) -> None:
        """Return if `requester` may have the session `request` describes, holding
        `flows` flow rules (one per serving node), beside the `sessions` that exist (the
        session being refreshed left out).

        Raise UnknownRequester; NotEndpoint when no endpoint address of the flow lies in
        its prefixes; ModuleNotAllowed naming the first module it may not use;
        QuotaExceeded when it holds its quota of sessions or flows already.
        """
        who = self.requester(requester)
        if who.prefixes is not None:
            _check_claim(who, request.match)
        if who.modules is not None:
            refused = [m.name for m in request.modules if m.name not in who.modules]
            if refused:
                raise ModuleNotAllowed(
                    f"requester {requester!r} may not use module {refused[0]!r};"
                    f" it may use {sorted(who.modules)}"
                )
        if who.max_sessions is None and who.max_flows is None:
            return  # no quota: the sessions held need not be counted
        own = [s for s in sessions if s.requester == requester]
        held = sessions_of(own)
        if who.max_sessions is not None and held >= who.max_sessions:
            raise QuotaExceeded(
                f"requester {requester!r} holds {held} session(s), its quota"
                f" (max_sessions {who.max_sessions}); end one first"
            )
        holds = sum(flows_of(s) for s in own)
        if who.max_flows is not None and holds + flows > who.max_flows:
            raise QuotaExceeded(
                f"requester {requester!r} holds {holds} flow(s); {flows} more would pass"
                f" its quota (max_flows {who.max_flows}); end a session first"
            )

    def check_owner(self, requester: str, session: Session) -> None:
        """Return if `requester` may change or end `session`: its own, or the operator.

        Raise UnknownRequester, or NotOwner.
        """
        self.requester(requester)
        if requester != OPERATOR and session.requester != requester:
            raise NotOwner(f"session {session.id} is not requester {requester!r}'s")

    def claimed_endpoint(self, requester: str, request: SessionRequest) -> str | None:
        """Return the address the return-routability check challenges for `request`:
        its first single address (source before destination) inside the requester's
        prefixes; None when the requester may claim any flow or names no such host."""
        who = self.requester(requester)
        if who.prefixes is None:
            return None
        for _, net in match_addresses(request.match):
            if net.num_addresses == 1 and _inside(net, who.prefixes):
                return str(net.network_address)
        return None

    def to_json(self, sessions: Iterable[Session] = ()) -> dict[str, object]:
        """Return the policy as JSON for the operator: each requester's rights and what
        it holds now; no secret."""
        held: dict[str, list[Session]] = {}
        for s in sessions:
            held.setdefault(s.requester, []).append(s)
        return {
            "file": None if self.source is None else str(self.source),
            "modules": self.modules.to_json(),
            "requesters": [
                who.to_json()
                | {
                    "sessions": sessions_of(held.get(rid, [])),
                    "flows": sum(flows_of(s) for s in held.get(rid, [])),
                }
                for rid, who in sorted(self.requesters.items())
            ],
        }


def _check_claim(who: Requester, match: FlowMatch) -> None:
    assert who.prefixes is not None
    addresses = match_addresses(match)
    mine = ", ".join(str(p) for p in who.prefixes) or "none"
    if not addresses:
        raise NotEndpoint(
            f"the match names no address; requester {who.id!r} may claim only flows"
            f" with an endpoint in its prefixes ({mine})"
        )
    if not any(_inside(net, who.prefixes) for _, net in addresses):
        claimed = ", ".join(f"{name}={net}" for name, net in addresses)
        raise NotEndpoint(
            f"no endpoint of the flow ({claimed}) lies in requester {who.id!r}'s prefixes ({mine})"
        )


#: With no policy file: the operator alone, who may do anything (today's behaviour).
OPERATOR_ONLY = Policy(MappingProxyType({OPERATOR: Requester(OPERATOR)}))


# --- loading -----------------------------------------------------------------------


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Return the Policy in the TOML file `path`.

    Raise PolicyError, its message naming the file and, where it can be found, the
    line and key at fault and what is wrong; nothing is half-loaded.
    """
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy file {path}: cannot read it: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path}: not valid TOML: {exc}") from None
    return _Loader(path, text).policy(data)


_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEYS = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER = re.compile(rf"\s*\[\s*({_KEYS})\s*\]")
_ASSIGN = re.compile(rf"\s*({_KEYS})\s*=")


def _parts(keys: str) -> tuple[str, ...]:
    out = []
    for part in re.findall(_PART, keys):
        if part[0] in "\"'":
            part = part[1:-1]
        out.append(part)
    return tuple(out)


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """Return the line where each table and key is written (best effort: tables,
    `key =` lines; a key inside an inline table is found by its table's line)."""
    where: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        if m := _HEADER.match(line):
            table = _parts(m.group(1))
            where.setdefault(table, number)
        elif m := _ASSIGN.match(line):
            where.setdefault(table + _parts(m.group(1)), number)
    return where


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"' for p in path)


class _Loader:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _lines(text)
        self.inline_secrets = False

    def fail(self, at: tuple[str, ...], what: str) -> PolicyError:
        line = next(
            (self.lines[at[:n]] for n in range(len(at), 0, -1) if at[:n] in self.lines), None
        )
        where = f" line {line}" if line is not None else ""
        return PolicyError(f"policy file {self.path}{where}: {_dotted(at) or '(top)'}: {what}")

    def table(self, raw: object, at: tuple[str, ...], known: frozenset[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(at, f"must be a table, not {_kind(raw)}")
        for key in raw:
            if key not in known:
                raise self.fail(at + (key,), f"unknown key; known here: {', '.join(sorted(known))}")
        return raw

    def policy(self, data: dict[str, Any]) -> Policy:
        data = self.table(data, (), _TOP_KEYS)
        operator = self.table(data.get("operator", {}), ("operator",), _OPERATOR_KEYS)
        people: dict[str, Requester] = {
            OPERATOR: Requester(
                OPERATOR,
                keys=self.keys(operator.get("keys", {}), ("operator", "keys")),
                token_hashes=self.tokens(operator.get("tokens", []), ("operator", "tokens")),
            )
        }
        requesters = data.get("requesters", {})
        if not isinstance(requesters, dict):
            raise self.fail(
                ("requesters",), f"must be a table of requesters, not {_kind(requesters)}"
            )
        for rid, raw in requesters.items():
            people[rid] = self.requester(rid, raw, ("requesters", rid))
        self.check_tokens_distinct(people)
        if self.inline_secrets:
            self.check_private(self.path, (), "the policy file holds secrets (hex:, base64:)")
        trust = self.module_trust(data.get("modules", {}), ("modules",))
        return Policy(MappingProxyType(people), self.path, trust)

    def module_trust(self, raw: object, at: tuple[str, ...]) -> ModuleTrust:
        body = self.table(raw, at, _MODULES_KEYS)
        allow = body.get("allow_unsigned", True)
        if not isinstance(allow, bool):
            raise self.fail(at + ("allow_unsigned",), f"must be true or false, not {_kind(allow)}")
        keys = body.get("trusted_publishers", [])
        where = at + ("trusted_publishers",)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise self.fail(where, "must be a list of public keys ('ed25519:...' or 'file:PATH')")
        out = []
        for spec in keys:
            try:
                if spec.startswith("file:"):
                    out.append(read_public_key(self.path.parent / spec[len("file:") :]))
                else:
                    public_key(spec)
                    out.append(spec)
            except OSError as exc:
                raise self.fail(where, f"cannot read {spec[5:]}: {exc.strerror or exc}") from None
            except SignatureError as exc:
                raise self.fail(where, str(exc)) from None
        return ModuleTrust(tuple(dict.fromkeys(out)), allow)

    def requester(self, rid: str, raw: object, at: tuple[str, ...]) -> Requester:
        if rid == OPERATOR:
            raise self.fail(
                at, "'operator' is the operator's identity: give its keys and tokens in [operator]"
            )
        if not wire.REQUESTER_RE.fullmatch(rid):
            raise self.fail(at, "a requester id is 1 to 64 printable ASCII characters, no space")
        body = self.table(raw, at, _REQUESTER_KEYS)
        for need in ("prefixes", "modules"):
            if need not in body:
                raise self.fail(at, f"'{need}' is required (what the requester may claim and use)")
        who = Requester(
            rid,
            keys=self.keys(body.get("keys", {}), at + ("keys",)),
            token_hashes=self.tokens(body.get("tokens", []), at + ("tokens",)),
            prefixes=self.prefixes(body["prefixes"], at + ("prefixes",)),
            modules=self.modules(body["modules"], at + ("modules",)),
            max_sessions=self.quota(body, "max_sessions", DEFAULT_MAX_SESSIONS, at),
            max_flows=self.quota(body, "max_flows", DEFAULT_MAX_FLOWS, at),
        )
        if not who.keys and not who.token_hashes:
            raise self.fail(at, "has neither keys nor tokens, so it could never prove who it is")
        return who

    def keys(self, raw: object, at: tuple[str, ...]) -> Mapping[int, bytes]:
        if not isinstance(raw, dict):
            raise self.fail(at, f"must be a table of key id = secret, not {_kind(raw)}")
        out = {}
        for key_id, spec in raw.items():
            if not re.fullmatch(r"0|[1-9][0-9]{0,9}", key_id) or int(key_id) > wire.U32_MAX:
                raise self.fail(at + (key_id,), f"a key id is a decimal number 0 to {wire.U32_MAX}")
            secret = self.secret(spec, at + (key_id,))
            if len(secret) < MIN_KEY_SIZE:
                raise self.fail(
                    at + (key_id,),
                    f"the secret is {len(secret)} bytes; at least {MIN_KEY_SIZE} (32 recommended)",
                )
            out[int(key_id)] = secret
        return MappingProxyType(out)

    def secret(self, spec: object, at: tuple[str, ...]) -> bytes:
        if not isinstance(spec, str):
            raise self.fail(at, f"a secret is a string (hex:, base64: or file:), not {_kind(spec)}")
        kind, _, value = spec.partition(":")
        if kind == "hex":
            self.inline_secrets = True
            try:
                return bytes.fromhex(value)
            except ValueError:
                raise self.fail(at, "not hexadecimal after 'hex:'") from None
        if kind == "base64":
            self.inline_secrets = True
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error:
                raise self.fail(at, "not base64 after 'base64:'") from None
        if kind == "file":
            return self.read_secret_file(value, at)
        raise self.fail(at, "a secret is written 'hex:...', 'base64:...' or 'file:PATH'")

    def tokens(self, raw: object, at: tuple[str, ...]) -> tuple[bytes, ...]:
        if not isinstance(raw, list):
            raise self.fail(at, f"must be a list of tokens, not {_kind(raw)}")
        out = []
        for spec in raw:
            if not isinstance(spec, str):
                raise self.fail(at, f"a token is a string, not {_kind(spec)}")
            kind, _, value = spec.partition(":")
            if kind == "sha256":
                if not _SHA256_HEX.fullmatch(value):
                    raise self.fail(
                        at,
                        "after 'sha256:' come the 64 lower-case hex digits of the token's SHA-256",
                    )
                out.append(bytes.fromhex(value))
            elif kind == "file":
                token = self.read_secret_file(value, at).strip()
                if len(token) < MIN_TOKEN_SIZE:
                    raise self.fail(
                        at, f"the token in {value} is shorter than {MIN_TOKEN_SIZE} bytes"
                    )
                out.append(hashlib.sha256(token).digest())
            else:
                raise self.fail(
                    at,
                    "a token is given as 'sha256:HEX' (its digest, never the token itself)"
                    " or 'file:PATH'",
                )
        return tuple(out)

    def read_secret_file(self, name: str, at: tuple[str, ...]) -> bytes:
        path = self.path.parent / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self.fail(at, f"cannot read {path}: {exc.strerror or exc}") from None
        self.check_private(path, at, f"{path} holds a secret")
        return data

    def check_private(self, path: Path, at: tuple[str, ...], why: str) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o044:
            raise self.fail(
                at,
                f"{why} but is readable by group or others (mode {mode:04o}): chmod go-rw {path}",
            )

    def prefixes(self, raw: object, at: tuple[str, ...]) -> tuple[Network, ...] | None:
        if raw == ANY:
            return None
        if not isinstance(raw, list):
            raise self.fail(at, f'must be "{ANY}" or a list of address prefixes, not {_kind(raw)}')
        out = []
        for text in raw:
            if not isinstance(text, str):
                raise self.fail(
                    at, f'a prefix is a string such as "10.0.0.1/32", not {_kind(text)}'
                )
            try:
                out.append(ipaddress.ip_network(text, strict=True))
            except ValueError as exc:
                raise self.fail(at, f"{text!r} is not an address prefix: {exc}") from None
        return tuple(out)

    def modules(self, raw: object, at: tuple[str, ...]) -> frozenset[str] | None:
        if raw == ALL:
            return None
        if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
            raise self.fail(at, f'must be "{ALL}" or a list of module names')
        bad = [m for m in raw if not wire.NAME_RE.fullmatch(m)]
        if bad:
            raise self.fail(at, f"{bad[0]!r} is not a module name ([a-z][a-z0-9_]*, at most 32)")
        return frozenset(raw)

    def quota(self, body: dict[str, Any], name: str, default: int, at: tuple[str, ...]) -> int:
        value = body.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= wire.U32_MAX:
            raise self.fail(at + (name,), f"must be a whole number 0 or more, not {value!r}")
        return value

    def check_tokens_distinct(self, people: Mapping[str, Requester]) -> None:
        owner: dict[bytes, str] = {}
        for rid, who in people.items():
            for digest in who.token_hashes:
                other = owner.setdefault(digest, rid)
                if other != rid:
                    at = (("requesters", rid) if rid != OPERATOR else ("operator",)) + ("tokens",)
                    raise self.fail(
                        at,
                        f"a token of {rid!r} is also {other!r}'s: each token names one requester",
                    )


def _kind(value: object) -> str:
    return {
        dict: "a table",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
