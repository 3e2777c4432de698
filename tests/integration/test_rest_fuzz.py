"""REST fuzzing against the real thing: a controller, one NetServ node, one active session.

A seeded generator sends mutated requests: bodies mutated from valid create, refresh and
registration bodies, paths around /netserv/, methods, and headers (a Content-Length that
lies, Transfer-Encoding, Content-Type, Expect, oversized headers, HTTP versions). Every
request must be answered within 1 s, never with a 5xx, never with a traceback. After the
run the sessions, the agent's chains and the switch's flows are what they were before.

The mutations are built so that no request should change anything: a create body keeps
the session's match, so one that stays valid is a 409, never a 201 (the match is only
ever made invalid, never changed to another valid match); a refresh body keeps the
session's lifetime or is broken; a DELETE never names the session as its canonical path;
a registration is always malformed. A well-formed registration for the node, with another
boot id and address, signed with the node's key, is taken as its agent restarting: the
controller re-attaches the node's chains there and ends the sessions it cannot re-attach.
That is agent identity, not REST parsing, so no well-formed registration is sent. Any 2xx
to a request that would create or end state is therefore a failure on its own, and the
final comparison catches the rest.

Most requests carry the operator's token, and most registrations the node's signature,
so that their bodies are read; the others carry none, or a wrong one, and are refused
before their bodies are read.

NETSERV_FUZZ_SEED picks the seed (default 5); NETSERV_FUZZ_COUNT the number of requests
(default 5,000; 100,000 with `pytest --long`).
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.auth import Signer, agent_key_id, controller_key_id
from controller.keyfiles import read_secret
from controller.requests import parse_dpid
from controller.tables import KIND_LEARNED, KIND_SHIFT, SESSION_ID_MAX
from signaling.client import NetServClient
from tests.agents import call_agent
from tests.rawhttp import Answer, exchange, has_traceback
from tools import ovs
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

SEED = int(os.environ.get("NETSERV_FUZZ_SEED", "5"))
COUNT, LONG_COUNT = 5_000, 100_000
LIFETIME = 3600  # outlives even the long run
ANSWER_WITHIN = 1.0


@dataclass
class Target:
    ctl: ControllerProcess
    client: NetServClient
    switch: Any
    session: dict[str, Any]
    registration: dict[str, str]
    agent_url: str

    def agent(self) -> dict[str, Any]:
        return call_agent(self.client, self.switch)

    def snapshot(self) -> dict[str, Any]:
        """Return what no refused request may change: sessions, chains, session flows."""
        sessions = [
            {k: v for k, v in s.items() if k != "expires_in"} for s in self.client.sessions()
        ]
        health = self.agent()
        return {
            "sessions": sessions,
            "chains": health["sessions"],
            "modules": health["modules_loaded"],
            "flows": flows(self.switch.name),
        }


def flows(bridge: str) -> list[str]:
    """Return the bridge's flows by cookie, table, priority, match and actions.

    Counters and ages are left out, and so are learned MAC flows: they follow the
    hosts' own traffic, not the REST API.
    """
    out = []
    for line in ovs.dump_flows(bridge):
        words = [
            w.rstrip(",")
            for w in line.split()
            if not w.startswith(("duration", "n_packets", "n_bytes", "idle_age", "hard_age"))
        ]
        cookie = int(words[0].split("=")[1], 16)
        if (cookie >> KIND_SHIFT) & 0xFF != KIND_LEARNED:
            out.append(" ".join(words))
    return sorted(out)


@pytest.fixture
def target(tmp_path: Path, unique_prefix: str) -> Iterator[Target]:
    with ControllerProcess(tmp_path / "controller.log") as ctl:
        topo = SingleSwitchTopo(k=2, prefix=unique_prefix)
        with netserv_network(
            topo, controller=ctl.of_addr, rest_url=ctl.url, rundir=tmp_path
        ) as net:
            client = NetServClient(ctl.url)
            wait_connected(net)
            switch = net.switches[0]
            wait_ready(client, [switch.dpid])
            h1, h2 = net.hosts
            match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": 9000}
            session = client.setup(
                match, module="counter", params={"log_every": 0}, lifetime=LIFETIME
            )
            (node,) = client.nodes()
            agent_url = node["agent"]["url"]
            health = call_agent(client, switch)
            registration = {
                "dpid": health["dpid"],
                "switch_port": health["switch_port"],
                "url": agent_url,
                "boot_id": health["boot_id"],
            }
            yield Target(ctl, client, switch, session, registration, agent_url)


# --- the generator ------------------------------------------------------------------
def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


DEEP = _nested(40)
JUNK: list[object] = [
    None,
    True,
    False,
    -1,
    -(2**63),
    -(2**63) - 1,
    2**63,
    2**64,
    10**30,
    1.5,
    -0.5,
    1e308,
    "",
    " ",
    "\x00",
    "x" * 3000,
    "counter\n",
    "9000 ",
    "\u00e9",
    "\U0001f600",
    [],
    [None],
    {},
    {"name": "counter"},
    {"": ""},
    DEEP,
]
# Spelled in the body's text where a value stands: never valid JSON as NetServ reads it.
RAW_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b"1" + b"0" * 5000,
    b'"\\ud800"',
    b'"\\udfff x"',
]
BAD_LOG_EVERY = [-1, -(2**63), 2**63, 2**64, 10**4000, 1_000_000_001]
# Inserted anywhere in a body: breaks its syntax, a string it lands in, or a number.
INSERTS = [b"\xff", b"\x00", b",", b"{", b"}", b"[", b"]", b'"', b"\\", b":", b"-", b" "]
INSERTS += [b"NaN", b"1e999", b"\xc3", b"\xed\xa0\x80", b"\r\n"]
ALWAYS_BAD_INSERTS = [b"\xff", b"\x00", b"\xc3", b"\xed\xa0\x80"]  # for registrations
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"]
ODD_METHODS = ["get", "Post", "FOO", "G\u00e9T", "DELETE\x7f", "P"]
NOT_SESSION_1 = [
    "+1",
    "01",
    "%31",
    "%2B1",
    "1.0",
    "1e0",
    "0x1",
    "0",
    "-1",
    "9" * 30,
    "9" * 3000,
    str(SESSION_ID_MAX + 1),
    "1%00",
    "1;x",
    "%201",
    "1%20",
    "\u0661",
    "",
    "..",
    "2",
    "99999",
]
KNOWN_PATHS = [
    "/netserv/nodes",
    "/netserv/modules",
    "/netserv/sessions",
    "/netserv/sessions/1",
    "/netserv/sessions/1/refresh",
    "/netserv/sessions/1/stats",
    "/netserv",
    "/",
]
PATH_CHARS = [chr(c) for c in range(0x21, 0x7F)] + ["%31", "%2F", "%00", "%ff", "\u00e9", "\xff"]
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=utf-16",
    "",
    "\u00e9/\u00e9",
]


@dataclass
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str | None] = field(default_factory=dict)
    version: str = "HTTP/1.1"
    what: str = ""
    registration: bool = False  # the body is a broken registration; a prefix may be whole

    def wire(self) -> bytes:
        head = {"Host": "netserv", "Connection": "close", "Content-Length": str(len(self.body))}
        head.update(self.headers)
        lines = [f"{self.method} {self.path} {self.version}"]
        lines += [f"{k}: {v}" for k, v in head.items() if v is not None]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    @property
    def route(self) -> str:
        return self.path.partition("?")[0]


class Fuzzer:
    """Builds the requests; every choice comes from one seeded Random."""

    def __init__(self, rng: random.Random, target: Target) -> None:
        self.rng = rng
        self.sid = str(target.session["id"])
        match = target.session["match"]
        claimed = {k: v for k, v in match.items() if k not in ("eth_type", "ip_proto")}
        self.create = {
            "match": claimed,
            "module": "counter",
            "params": {"log_every": 0},
            "lifetime": LIFETIME,
            "node": target.session["node"],
        }
        self.chain = {
            "match": claimed,
            "modules": ["null", {"name": "counter", "params": {"log_every": 0}}],
            "lifetime": LIFETIME,
        }
        self.refresh = {"lifetime": LIFETIME}
        self.registration = dict(target.registration)
        self.token = target.ctl.token
        key = read_secret(target.switch.key_file)
        dpid = target.switch.dpid_int
        self.agent = Signer(key, agent_key_id(dpid), controller_key_id(dpid))
        self.bad_dpids = [j for j in JUNK if not _parses(parse_dpid, j)]

    # bodies -----------------------------------------------------------------------
    def create_body(self) -> bytes:
        base = copy.deepcopy(self.rng.choice([self.create, self.chain]))
        return self._mutate(base, keep=("match",), params=True)

    def refresh_body(self) -> bytes:
        return self._mutate(copy.deepcopy(self.refresh), keep=(), params=False)

    def registration_body(self) -> bytes:
        """A registration that is always malformed (see the module docstring)."""
        body = copy.deepcopy(self.registration)
        op = self.rng.randrange(8)
        if op == 0:
            del body[self.rng.choice(sorted(body))]
        elif op == 1:
            body["dpid"] = self.rng.choice(self.bad_dpids)
        elif op == 2:
            return self._raw_token(body)
        elif op == 3:
            return self._duplicate_key(body)
        elif op == 4:
            return self._insert(json.dumps(body).encode(), ALWAYS_BAD_INSERTS)
        elif op == 5:
            return self._truncate(json.dumps(body).encode())
        elif op == 6:
            return self._wrap(body)
        else:
            return json.dumps(body).encode() + self.rng.choice([b"x", b"}", b",", b"\xff"])
        return json.dumps(body).encode()

    def any_body(self) -> tuple[bytes, bool]:
        """Return a body from any of the three generators, and whether it is a registration."""
        make = self.rng.choice([self.create_body, self.refresh_body, self.registration_body])
        return make(), make == self.registration_body

    def _mutate(self, body: dict[str, Any], keep: tuple[str, ...], params: bool) -> bytes:
        """Return `body` mutated; keys in `keep` may be broken but never dropped."""
        rng = self.rng
        op = rng.randrange(13)
        if op == 0:
            self._replace(body)
        elif op == 1 and set(body) - set(keep):
            del body[rng.choice(sorted(set(body) - set(keep)))]
        elif op == 2:
            target = rng.choice(_dicts(body))
            target[rng.choice(["colour", "Match", "udp_port", "x" * 200, ""])] = 1
        elif op == 3:
            target = rng.choice(_dicts(body))
            if target:
                key = rng.choice(sorted(target))
                target[rng.choice([key.upper(), key + "_", " " + key, key[:-1]])] = target.pop(key)
        elif op == 4 and params:
            module = body.get("params") or body["modules"][1]["params"]
            module["log_every"] = rng.choice(BAD_LOG_EVERY)
        elif op == 5:
            return self._raw_token(body)
        elif op == 6:
            return self._duplicate_key(body)
        elif op == 7:
            return self._insert(json.dumps(body).encode(), INSERTS)
        elif op == 8:
            return self._truncate(json.dumps(body).encode())
        elif op == 9:
            return self._wrap(body)
        elif op == 10:
            text = json.dumps(body)
            return rng.choice([text.encode("utf-16"), b"\xef\xbb\xbf" + text.encode()])
        elif op == 11:
            depth = rng.choice([33, 100, 1000, 50_000])
            return b"[" * depth + json.dumps(body).encode() + b"]" * depth
        else:
            return json.dumps(body).encode() + rng.choice([b"x", b"}", b"]", b",", b"\x00"])
        return json.dumps(body).encode()

    def _replace(self, body: dict[str, Any]) -> None:
        """Replace one value anywhere in `body` (but never a match's key) with junk."""
        holder, key = self.rng.choice(_slots(body))
        holder[key] = copy.deepcopy(self.rng.choice(JUNK))

    def _raw_token(self, body: dict[str, Any]) -> bytes:
        holder, key = self.rng.choice(_slots(body))
        holder[key] = "\x01SLOT\x01"
        return (
            json.dumps(body).encode().replace(b'"\\u0001SLOT\\u0001"', self.rng.choice(RAW_TOKENS))
        )

    def _duplicate_key(self, body: dict[str, Any]) -> bytes:
        key = self.rng.choice(sorted(body))
        extra = json.dumps({key: self.rng.choice([body[key], *JUNK[:6]])})
        return json.dumps(body)[:-1].encode() + b", " + extra[1:].encode()

    def _insert(self, data: bytes, pool: list[bytes]) -> bytes:
        at = self.rng.randrange(len(data) + 1)
        return data[:at] + self.rng.choice(pool) + data[at:]

    def _truncate(self, data: bytes) -> bytes:
        return data[: self.rng.randrange(max(1, len(data) - 1))]

    def _wrap(self, body: dict[str, Any]) -> bytes:
        return json.dumps(
            self.rng.choice([[body], {"request": body}, "text", 12, None, True])
        ).encode()

    # paths -----------------------------------------------------------------------------
    def session_path(self) -> str:
        sid = self.rng.choice(NOT_SESSION_1 + [self.sid])
        return f"/netserv/sessions/{sid}" + self.rng.choice(["", "/stats", "/refresh", "/x", "/"])

    def odd_path(self) -> str:
        rng = self.rng
        path = rng.choice(KNOWN_PATHS).replace("/1", "/" + self.sid)
        for _ in range(rng.choice([1, 1, 2, 3])):
            op = rng.randrange(8)
            at = rng.randrange(len(path) + 1)
            if op == 0:
                path = path[:at] + rng.choice(PATH_CHARS) + path[at:]
            elif op == 1 and len(path) > 1:
                path = path[:at] + path[at + 1 :]
            elif op == 2:
                path = path.upper() if rng.random() < 0.5 else path + "/"
            elif op == 3:
                path = "/" + path
            elif op == 4:
                path += "?" + rng.choice(["x=1", "id=1", "%ff", "a" * 100, "&&", "="])
            elif op == 5:
                path = path.replace("/" + self.sid, "/" + rng.choice(NOT_SESSION_1))
            elif op == 6:
                path = path + "/.." * rng.randrange(1, 4)
            else:
                path = path + ("/x" * rng.choice([10, 1000, 5000]))
        return path

    # requests --------------------------------------------------------------------------
    def request(self) -> Request:
        rng = self.rng
        kind = rng.choices(
            ["create", "refresh", "register", "session", "odd", "gets"], [30, 12, 15, 15, 20, 8]
        )[0]
        if kind == "create":
            req = Request("POST", "/netserv/sessions", self.create_body())
        elif kind == "refresh":
            sid = rng.choice([self.sid, self.sid, *NOT_SESSION_1])
            req = Request("POST", f"/netserv/sessions/{sid}/refresh", self.refresh_body())
        elif kind == "register":
            req = Request("POST", "/netserv/nodes", self.registration_body(), registration=True)
        elif kind in ("session", "odd"):
            method = rng.choice(METHODS + ODD_METHODS)
            path = self.session_path() if kind == "session" else self.odd_path()
            body, registration = self.any_body() if rng.random() < 0.4 else (b"", False)
            req = Request(method, path, body, registration=registration)
        else:
            req = Request("GET", rng.choice(KNOWN_PATHS).replace("/1", "/" + self.sid))
        self._credentials(req, kind)
        if rng.random() < 0.25:
            self._headers(req)
        if req.method.upper().startswith("DELETE") and req.route == f"/netserv/sessions/{self.sid}":
            req.method = "GET"  # the one request that would end the session on purpose
        req.what = kind
        return req

    def _credentials(self, req: Request, kind: str) -> None:
        """Sign most registrations as the node's agent; give most others the token."""
        rng = self.rng
        if kind == "register" and rng.random() < 0.8:
            req.headers.update(self.agent.sign(req.method, req.path, req.body))
        elif rng.random() < 0.9:
            req.headers["Authorization"] = f"Bearer {self.token}"
        elif rng.random() < 0.5:
            wrong = ["Bearer", f"Bearer {self.token[:-1]}", f"Basic {self.token}", self.token]
            req.headers["Authorization"] = rng.choice(wrong)

    def _headers(self, req: Request) -> None:
        rng = self.rng
        op = rng.randrange(12)
        n = len(req.body)
        if op == 0:  # promises more than it sends: the server must see the end, not wait
            req.headers["Content-Length"] = str(n + rng.choice([1, 10, 1000, 10**9]))
        elif op == 1 and n and not req.registration:  # a prefix could be a whole registration
            req.headers["Content-Length"] = str(rng.randrange(n))
        elif op == 2:
            req.headers["Content-Length"] = rng.choice(["-1", "abc", "1e3", " ", "0x10", "9" * 40])
        elif op == 3:
            req.headers["Content-Length"] = f"{n}, {n + 1}"
        elif op == 4:  # chunked, well or badly
            req.headers["Content-Length"] = None
            req.headers["Transfer-Encoding"] = "chunked"
            size = rng.choice([f"{n:x}", f"{n + 5:x}", "zz", "-1", ""])
            req.body = f"{size}\r\n".encode() + req.body + b"\r\n0\r\n\r\n"
        elif op == 5:
            req.headers["Transfer-Encoding"] = rng.choice(["chunked", "gzip", "\u00e9"])
        elif op == 6:
            req.headers["Content-Type"] = rng.choice(CONTENT_TYPES)
        elif op == 7:
            req.headers["Expect"] = "100-continue"
        elif op == 8:
            req.headers["X-Big"] = "a" * rng.choice([100, 8000, 70_000])
        elif op == 9:
            for i in range(rng.choice([50, 150])):
                req.headers[f"X-{i}"] = "y"
        elif op == 10:
            req.version = rng.choice(["HTTP/1.0", "HTTP/1.0", "HTTP/1.x", "HTTP/2.0", "FOO/1.1"])
        else:
            req.headers[rng.choice(["Host", "Connection"])] = rng.choice([None, "\u00e9", ""])


def _parses(parse: Callable[[object], object], value: object) -> bool:
    try:
        parse(value)
    except Exception:
        return False
    return True


def _dicts(value: object) -> list[dict[str, Any]]:
    """Return every dict inside `value` (itself included), outermost first."""
    if isinstance(value, dict):
        return [value] + [d for v in value.values() for d in _dicts(v)]
    if isinstance(value, list):
        return [d for v in value for d in _dicts(v)]
    return []


def _slots(value: object) -> list[tuple[Any, Any]]:
    """Return (container, key) of every value inside `value`."""
    out: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((value, key))
            out += _slots(child)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.append((value, index))
            out += _slots(child)
    return out


# --- the test -----------------------------------------------------------------------
def problem(req: Request, answer: Answer) -> str | None:
    """Return what is wrong with `answer` to `req`, or None when it is acceptable."""
    if answer.status == 0:
        return "no answer"
    if answer.status >= 500:
        return f"status {answer.status}"
    if answer.seconds > ANSWER_WITHIN:
        return f"answered after {answer.seconds:.2f} s"
    if has_traceback(answer.body):
        return "a traceback in the body"
    has_body = req.method.upper() != "HEAD"
    if has_body and answer.headers.get("content-type", "").startswith("application/json"):
        try:
            body = answer.json()
        except ValueError:
            return "a body that is not JSON"
        if answer.status >= 400 and not (isinstance(body, dict) and body.get("error")):
            return "an error without a message"
    if 200 <= answer.status < 300:
        method = req.method.upper()
        if req.route.startswith("/netserv/sessions") and method == "POST" and answer.status == 201:
            return "a session was created"
        if req.route == "/netserv/nodes" and method == "POST":
            return "a registration was accepted"
        if method.startswith("DELETE"):
            return "something was deleted"
    return None


def test_rest_fuzz(target: Target, request: pytest.FixtureRequest) -> None:
    count = int(
        os.environ.get(
            "NETSERV_FUZZ_COUNT", LONG_COUNT if request.config.getoption("--long") else COUNT
        )
    )
    rng = random.Random(SEED)
    fuzzer = Fuzzer(rng, target)
    before = target.snapshot()
    failures: list[str] = []
    accepted: list[str] = []  # 2xx answers to anything but GET: what may have changed state
    statuses: dict[int, int] = {}
    started = time.monotonic()
    for i in range(count):
        req = fuzzer.request()
        answer = exchange(target.ctl.rest_port, req.wire(), timeout=ANSWER_WITHIN + 2)
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        if 200 <= answer.status < 300 and req.method != "GET":
            accepted.append(f"#{i} {req.wire()[:300]!r} -> {answer.status}")
        wrong = problem(req, answer)
        if wrong:
            failures.append(
                f"#{i} ({req.what}) {wrong}: {req.wire()[:300]!r} -> {answer.status} "
                f"{answer.body[:200]!r}"
            )
            if len(failures) >= 20:
                break
        if i % 1000 == 999:
            assert target.snapshot() == before, "\n".join(
                [f"state changed by one of requests #{i - 999}..#{i}", *failures, *accepted[-20:]]
            )
    elapsed = time.monotonic() - started
    assert not failures, "\n".join(failures)
    assert target.snapshot() == before
    assert statuses.get(409, 0) > 0 and statuses.get(400, 0) > count // 4, statuses
    assert statuses.get(401, 0) > 0, statuses
    log = target.ctl.logfile.read_text(errors="replace")
    assert "internal error" not in log and "Traceback" not in log
    print(
        f"\n{count} requests in {elapsed:.1f} s (seed {SEED}): statuses {sorted(statuses.items())}"
    )
