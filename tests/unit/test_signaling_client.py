"""The UDP client and `netserv signal`, against the controller's signaling handler
answering on a loopback socket (the session service on a simulated switch)."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from dataclasses import replace

import pytest

from controller.signaling import SignalingHandler
from signaling.auth import Key, sign
from signaling.client_udp import SignalingClient
from signaling.codec import decode, encode
from signaling.errors import ErrorCode
from signaling.exchange import SEQUENCE_EPOCH, ExchangeState, sequence_from_clock
from signaling.keyfile import KeyFileError, make_key_file, read_key
from signaling.messages import Ack, ChallengeResponse, Refresh, Setup
from signaling.routability import challenge_for
from signaling.session import Outcome, SessionState, Timers
from signaling.values import Description, FlowFilter, ModuleRef, NodeSelection
from tests.unit.conftest import DPID, policy_of
from tools.cli import main

KEY = Key(3, bytes(range(32)))
FLOW = FlowFilter(src="10.0.0.1", dst="10.0.0.2", protocol=17, dst_ports=9000)
DESCRIPTION = Description("alice@h1", FLOW, [ModuleRef("counter")], 3)
FAST = Timers(rto=0.05, max_rto=0.05, max_transmissions=3)  # for giving up soon
PATIENT = Timers(rto=0.5, max_rto=2.0)  # answers come, even on a busy machine


class Responder:
    """The handler, answering datagrams on 127.0.0.1 from a thread."""

    def __init__(self, handler: SignalingHandler) -> None:
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            answer = self.handler.respond(data, ("10.0.0.1", "10.0.0.2"))
            if answer is not None:
                self.sock.sendto(answer, peer)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def responder(world):
    service = world[0]
    service.policy = policy_of("alice@h1", keys={KEY.key_id: KEY.secret})
    r = Responder(SignalingHandler(service))
    yield r
    r.close()


def client(port: int, key: Key | None = KEY, timers: Timers = PATIENT) -> SignalingClient:
    return SignalingClient("127.0.0.1", key, port, timers)


def test_setup_refresh_and_teardown_through_the_socket(responder):
    service = responder.handler.service
    with client(responder.port) as c:
        session = c.setup(DESCRIPTION)
        assert session.state is SessionState.ESTABLISHED and session.nodes == (DPID,)
        (made,) = service.sessions.all()
        assert made.ref == session.session_id and made.requester == "alice@h1"
        again = c.refresh(DESCRIPTION, session.session_id)
        assert again.state is ExchangeState.ANSWERED and isinstance(again.answer, Ack)
        ended = c.teardown("alice@h1", session.session_id)
        assert isinstance(ended.answer, Ack) and service.sessions.all() == []


def test_a_kept_session_refreshes_until_stopped_then_is_torn_down(responder):
    service = responder.handler.service
    short = Description("alice@h1", FLOW, [ModuleRef("counter")], 2)  # refresh every 2/3 s
    refreshes = []
    with client(responder.port) as c:
        session = c.setup(short, keep=True)
        c.keep(session, lambda: len(refreshes) >= 3, refreshes.append)
        assert session.state is SessionState.ESTABLISHED and len(service.sessions.all()) == 1
        assert session.sequence == 4  # SETUP and three REFRESHes
        c.close_session(session)
    assert session.outcome is Outcome.TORN_DOWN and service.sessions.all() == []


def test_a_refusal_closes_the_session_with_the_error(responder):
    with client(responder.port) as c:
        bad = Description("alice@h1", FLOW, [ModuleRef("nope")], 3)
        session = c.setup(bad)
    assert session.outcome is Outcome.REFUSED and session.error.code == ErrorCode.INVALID_REQUEST
    with client(responder.port, key=None) as c:
        session = c.setup(DESCRIPTION)  # unsigned: refused, and the refusal is accepted unsigned
    assert session.error.code == ErrorCode.BAD_AUTH


def test_no_answer_gives_up_after_the_last_transmission():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with client(silent.getsockname()[1], timers=FAST) as c:
            session = c.setup(DESCRIPTION)
            assert session.outcome is Outcome.NO_ANSWER
            assert len(c.teardown("alice@h1", 5).pending.sent) == FAST.max_transmissions


def test_a_probe_through_the_socket(responder):
    with client(responder.port) as c:
        probe = c.probe("alice@h1", FLOW, NodeSelection.every())
    assert probe.state is ExchangeState.ANSWERED and [n.dpid for n in probe.response.nodes] == [
        DPID
    ]


def test_sequence_numbers_from_the_clock_rise_above_a_sessions_own():
    assert sequence_from_clock(SEQUENCE_EPOCH) == 2
    assert sequence_from_clock(SEQUENCE_EPOCH + 3600) > sequence_from_clock(SEQUENCE_EPOCH + 60)
    later = [sequence_from_clock(SEQUENCE_EPOCH + 86400 * 40 + (t + 0.5) / 1000) for t in range(5)]
    assert later == sorted(set(later)) and all(2 <= s < 1 << 32 for s in later)


# --- key files ---------------------------------------------------------------------------


def test_a_key_file_is_the_secrets_bytes_and_private(tmp_path):
    path = tmp_path / "alice-1.key"
    secret = make_key_file(path)
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key(path, 4) == Key(4, secret)
    with pytest.raises(KeyFileError, match="exists"):
        make_key_file(path)


def test_a_bad_key_file_says_what_is_wrong(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(bytes(8))
    with pytest.raises(KeyFileError, match="at least 16 bytes.*it has 8"):
        read_key(short)
    with pytest.raises(KeyFileError, match="No such file"):
        read_key(tmp_path / "missing.key")
    good = tmp_path / "good.key"
    good.write_bytes(bytes(32))
    with pytest.raises(KeyFileError, match="key id"):
        read_key(good, -1)


# --- netserv signal ------------------------------------------------------------------------


def signal(tmp_path, port: int, *args: str) -> list[str]:
    key = tmp_path / "alice.key"
    if not key.exists():
        key.write_bytes(KEY.secret)
    who = ["--requester", "alice@h1", "--key-file", str(key), "--key-id", str(KEY.key_id)]
    return ["signal", *args, *who, "--port", str(port)]


FLOW_ARGS = ["--src", "10.0.0.1", "--dst", "127.0.0.1", "--protocol", "udp", "--dst-port", "9000"]


def test_the_cli_sets_up_probes_and_tears_down(responder, tmp_path, capsys):
    service = responder.handler.service
    argv = signal(tmp_path, responder.port, "setup", *FLOW_ARGS, "--module", "counter")
    assert main([*argv, "--param", "log_every=7", "--lifetime", "30", "--nodes", "1"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["nodes"] == ["0000000000000001"] and made["lifetime"] == 30
    (session,) = service.sessions.all()
    assert dict(session.modules[0].params) == {"log_every": 7}
    assert f"{session.ref:016x}" == made["session"]
    assert session.match.as_dict()["ipv4_dst"] == "127.0.0.1"  # --to defaults to --dst
    assert main(signal(tmp_path, responder.port, "probe", *FLOW_ARGS)) == 0
    (node,) = json.loads(capsys.readouterr().out)["nodes"]
    assert node["dpid"] == "0000000000000001" and node["sessions"] == 1
    down = signal(tmp_path, responder.port, "teardown", "--session", made["session"])
    assert main([*down, "--to", "127.0.0.1"]) == 0
    assert json.loads(capsys.readouterr().out)["ended"] == "teardown"
    assert service.sessions.all() == []


def test_the_cli_says_why_it_was_refused(responder, tmp_path, capsys):
    argv = signal(tmp_path, responder.port, "setup", *FLOW_ARGS, "--module", "nope")
    assert main(argv) == 1
    assert "refused: 303 INVALID_REQUEST: unknown module 'nope'" in capsys.readouterr().err
    down = signal(tmp_path, responder.port, "teardown", "--session", "abc", "--to", "127.0.0.1")
    assert main(down) == 1
    assert "refused: 400 UNKNOWN_SESSION" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, words",
    [
        (["setup", "--module", "counter", "--dst", "10.0.0.0/8"], "give --to"),
        (["setup", "--module", "counter", "--dst", "10.0.0.2", "--protocol", "gre"], "protocol"),
        (["setup", "--module", "counter", "--dst", "10.0.0.2", "--nodes", "one"], "--nodes"),
        (["setup", "--module", "counter", "--dst", "10.0.0.2", "--dst-port", "x"], "port"),
        (["setup", "--module", "counter", "--dst", "10.0.0.2", "--dst-port", "9"], "ports need"),
        (["probe", "--dst", "10.0.0.2", "--key-file", "/nonexistent"], "key file"),
    ],
)
def test_the_cli_refuses_bad_options_saying_why(tmp_path, args, words):
    with pytest.raises(SystemExit, match=words):
        main(["signal", *args, "--requester", "alice@h1"])


def test_keygen_makes_a_key_file_the_policy_can_name(tmp_path, capsys):
    out = tmp_path / "k.key"
    assert main(["signal", "keygen", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == {"key_file": str(out)}
    assert len(read_key(out).secret) == 32


class Challenger:
    """A responder that checks return-routability: it answers a SETUP or REFRESH only
    once a CHALLENGE it sent to the request's address and port, from a socket of its
    own, came back there with the cookie. `foreign` first sends a CHALLENGE of another
    session, which must get no answer."""

    def __init__(self, foreign: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.challenger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.challenger.bind(("127.0.0.1", 0))
        self.foreign = foreign
        self.confirmed: list[str] = []  # the requests let through, by type
        self.unanswered = 0  # challenges that got no answer
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _challenge(self, request, peer, cookie: bytes) -> bool:
        self.challenger.sendto(encode(challenge_for(request, cookie, 0)), peer)
        self.challenger.settimeout(0.3)
        try:
            data, _ = self.challenger.recvfrom(65535)
        except TimeoutError:
            self.unanswered += 1
            return False
        reply = decode(data)
        return isinstance(reply, ChallengeResponse) and reply.nonce == cookie

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            request = decode(data)
            if isinstance(request, Setup | Refresh):
                if self.foreign:
                    other = replace(request, session_id=request.session_id + 1)
                    assert not self._challenge(other, peer, b"f" * 16)
                if not self._challenge(request, peer, os.urandom(16)):
                    continue
                self.confirmed.append(type(request).__name__)
                answer = Ack.answering(request, 0, request.description.lifetime, (DPID,))
            else:
                answer = Ack.answering(request, 0)
            self.sock.sendto(sign(answer, KEY), peer)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()
        self.challenger.close()


@pytest.fixture
def challenger():
    c = Challenger()
    yield c
    c.close()


def test_the_client_answers_the_challenge_of_its_own_setup(challenger):
    with client(challenger.port) as c:
        session = c.setup(DESCRIPTION)
        assert session.state is SessionState.ESTABLISHED and c.challenges_answered == 1
        assert challenger.confirmed == ["Setup"]
        c.close_session(session)
    assert session.outcome is Outcome.TORN_DOWN


def test_the_client_ignores_a_challenge_of_a_session_it_did_not_ask_for():
    foreign = Challenger(foreign=True)
    try:
        with client(foreign.port) as c:
            session = c.setup(DESCRIPTION)
            assert session.state is SessionState.ESTABLISHED and c.challenges_answered == 1
        assert foreign.unanswered == 1 and c.ignored >= 1
    finally:
        foreign.close()


def test_keep_refreshes_and_answers_the_challenge_of_a_refresh_that_rebuilds(challenger):
    # this responder checks every REFRESH, as a controller that lost the session does
    short = replace(DESCRIPTION, lifetime=1)
    refreshed = []
    with client(challenger.port) as c:
        session = c.setup(short, keep=True)
        c.keep(session, lambda: len(refreshed) >= 2, refreshed.append)
    assert challenger.confirmed == ["Setup", "Refresh", "Refresh"]
    assert session.state is SessionState.ESTABLISHED and c.challenges_answered == 3


def test_a_refresh_sent_on_its_own_answers_its_challenge(challenger):
    with client(challenger.port) as c:
        exchange = c.refresh(DESCRIPTION, 0x5EED)
    assert exchange.state is ExchangeState.ANSWERED and challenger.confirmed == ["Refresh"]
