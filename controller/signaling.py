"""On-path signaling at the controller: a punted datagram in, packet-outs out.

    handler = SignalingHandler(service)
    sends = handler.packet_in(dpid, in_port, frame)   # run off Ryu's event loop: it waits
    sends = handler.tick()                            # often: CHALLENGEs again, time-outs
    # each send is (dpid, message): the switch it goes to

Checks, in the order docs/signaling.md gives, each refusal answered with its ERROR
code (when the message can be answered at all), logged and counted (the service's
`rejections`, as REST's), with no state changed: decoding (1xx), the requester's key
in the policy (203, or 200 unsigned), the MAC (200), the timestamp and nonce (202,
201), the sequence number (a retransmission gets the stored answer, a late copy
nothing), then the request itself, which becomes a SessionRequest
(`controller/requests.py`) for the same service methods REST calls, the policy's
checks among them. Answers to a signed request are signed with the requester's key.

A SETUP (or a REFRESH that sets a lost session up again) whose requester the policy
does not trust with any flow is installed only after the return-routability check
(`controller/routability.py`): its sessions are reserved PENDING_ROUTABILITY, a
CHALLENGE goes out of the switch port where the claimed endpoint is attached, and the
request is answered once a CHALLENGE-RESPONSE from that address, by that port, with
the cookie, has come (installed, ACK) or once the time-out has passed (withdrawn,
ERROR 304).

Pure apart from what is handed in: the service (and its policy), the wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from controller.errors import (
    NetServError,
    NotFound,
    Unauthenticated,
    Unavailable,
    UnknownRequester,
    signaling_code,
)
from controller.messages import Message, Output, PacketOut
from controller.modules import as_source
from controller.placement import select_nodes
from controller.requests import SessionRequest, flow_ends, request_from_description
from controller.routability import At, Check, ReturnRoutability, endpoint_to_check
from controller.service import NetServService
from controller.sessions import SESSION_TAGS, Session, State
from controller.sigframes import Datagram, answer_frame, parse_datagram
from signaling import wire
from signaling.auth import Key, sign, verify
from signaling.codec import decode, encode
from signaling.errors import ErrorCode, SignalingProtocolError
from signaling.freshness import ReplayGuard
from signaling.messages import (
    Ack,
    Answer,
    Challenge,
    ChallengeResponse,
    ErrorReply,
    Probe,
    ProbeResponse,
    Refresh,
    Request,
    Setup,
    Teardown,
)
from signaling.routability import challenge_for
from signaling.values import NodeInfo

log = logging.getLogger("netserv.signaling")

# A request's answer is kept this long for its retransmissions: longer than a requester
# retransmits a SETUP or TEARDOWN (23 s) and than the freshness window (30 s), past
# which a copy of the request is refused by its timestamp anyway.
ANSWER_KEEP = 60.0
ANSWER_CAPACITY = 10_000  # answers kept at most; the oldest go first
INTERNAL = "internal error; the controller's log has the details"
Sender = tuple[str, str]  # the signaling datagram's source and destination addresses
Send = tuple[int, Message]  # a message and the switch it goes to
TRANSPORT = "signaling"  # what refusals are counted under, beside REST's


@dataclass(frozen=True)
class Origin:
    """Where a request came from: the switch and port that punted it, and its datagram."""

    dpid: int
    in_port: int
    datagram: Datagram

    def reply(self, data: bytes) -> Send:
        """Return the packet-out that carries `data` back to the request's sender."""
        frame = answer_frame(self.datagram, data)
        return self.dpid, PacketOut(None, (Output(self.in_port),), frame)


@dataclass
class _Held:
    """A request held while its claimed endpoint is challenged: its reserved sessions,
    its latest transmission (the one answered) and where it came from, and the way
    to the endpoint (`toward`: the datagram the endpoint's answer will be)."""

    reserved: list[Session]
    request: Setup | Refresh
    key: Key
    origin: Origin
    toward: Datagram
    rebuilt: bool  # a REFRESH of a session the controller did not hold


@dataclass(frozen=True)
class _Kept:
    sequence: int
    data: bytes
    at: float


class AnswerCache:
    """The last answer acted on, per (requester, session id), for `keep` seconds; at
    most `capacity` of them. Pure: time passed in."""

    def __init__(self, keep: float = ANSWER_KEEP, capacity: int = ANSWER_CAPACITY) -> None:
        self.keep, self.capacity = keep, capacity
        self._kept: OrderedDict[tuple[str, int], _Kept] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, key: tuple[str, int], now: float) -> _Kept | None:
        """Return what is kept for `key`, or None."""
        while self._kept and next(iter(self._kept.values())).at <= now - self.keep:
            self._kept.popitem(last=False)
        return self._kept.get(key)

    def put(self, key: tuple[str, int], sequence: int, data: bytes, now: float) -> None:
        """Keep `data`, the answer to request `sequence` of `key`."""
        self._kept.pop(key, None)
        self._kept[key] = _Kept(sequence, data, now)
        while len(self._kept) > self.capacity:
            self._kept.popitem(last=False)


class SignalingHandler:
    """Answers on-path signaling; `counts` says what it saw and did."""

    def __init__(
        self,
        service: NetServService,
        wall: Callable[[], float] = time.time,
        guard: ReplayGuard | None = None,
        answers: AnswerCache | None = None,
        checks: ReturnRoutability | None = None,
    ) -> None:
        self.service = service
        self.wall = wall
        self.guard = guard or ReplayGuard()
        self.answers = answers or AnswerCache()
        self.checks = checks or ReturnRoutability()
        self.counts: Counter[str] = Counter()
        self._busy: set[tuple[str, int]] = set()
        self._held: dict[tuple[str, int, int], _Held] = {}  # by the check's key
        self._lock = threading.RLock()  # counting happens under it too

    def packet_in(self, dpid: int, in_port: int, frame: bytes) -> list[Send]:
        """Handle a frame the switch `dpid` punted from `in_port`; return the
        packet-outs to send: its answer, a CHALLENGE, a held request's answer; or
        nothing (not signaling, or not to be answered)."""
        datagram = parse_datagram(frame)
        if datagram is None:
            self._count("dropped: not a signaling datagram")
            return []
        origin = Origin(dpid, in_port, datagram)
        out: list[Send] = []
        answer = self.respond(datagram.payload, (datagram.src, datagram.dst), origin, out)
        if answer is not None:
            out.append(origin.reply(answer))
        return out

    def respond(
        self,
        payload: bytes,
        sender: Sender,
        origin: Origin | None = None,
        out: list[Send] | None = None,
    ) -> bytes | None:
        """Return the answer to the signaling message `payload`, or None when it gets none
        now. With the `origin` of an on-path request, what else is to be sent (a
        CHALLENGE, or the answer to a request a CHALLENGE-RESPONSE confirms) is added
        to `out`; without one, a request that must be checked is refused (501)."""
        self._count("received")
        now = self.wall()
        out = [] if out is None else out
        try:
            message = decode(payload)
        except SignalingProtocolError as exc:
            echo = exc.echo
            if echo is None or not echo.answerable:
                self._count("dropped: unreadable")
                return None
            self._refused(exc, None, sender)
            return encode(ErrorReply.answering(echo, _ms(now), exc.code, exc.reason))
        if isinstance(message, ChallengeResponse) and origin is not None:
            out += self._confirmed(message, origin, now)
            return None
        if message.TYPE.is_response:
            self._count("dropped: an answer")
            return None
        if isinstance(message, Challenge):  # the responder's own kind: never answered
            self._count("dropped: a challenge")
            return None
        key: Key | None = None
        try:
            key = self._authenticate(payload, message)
            with self._lock:
                self.guard.check(message.requester, message.nonce, message.timestamp_ms, now)
        except (NetServError, SignalingProtocolError) as exc:
            code = self._refused(exc, message.requester, sender)
            answer = ErrorReply.answering(message, _ms(now), code, _reason(exc))
            return self._encode(answer, key)  # signed once the key is known (201, 202)
        return self._sequenced(message, key, sender, now, origin, out)

    def _authenticate(self, payload: bytes, message: Request) -> Key:
        """Return the requester's key that signed `message`; raise Unauthenticated,
        UnknownRequester, or SignalingProtocolError (BAD_AUTH) for a wrong MAC."""
        auth = message.auth
        if auth is None:
            raise Unauthenticated("the request is not signed; signing is required")
        secret = self.service.policy.key(message.requester, auth.key_id)
        if secret is None:
            raise UnknownRequester(
                f"the policy has no key {auth.key_id} of requester {message.requester!r}"
            )
        verify(payload, message, secret)
        return Key(auth.key_id, secret)

    def _sequenced(
        self,
        message: Request,
        key: Key,
        sender: Sender,
        now: float,
        origin: Origin | None,
        out: list[Send],
    ) -> bytes | None:
        """Act on `message` unless it repeats (or comes before) the last request of its
        session acted on; return the answer (None: none now)."""
        session = (message.requester, message.session_id)
        with self._lock:
            held = self._held.get((*session, message.sequence))
            if held is not None and isinstance(message, Setup | Refresh):
                if origin is not None:  # the check's answer goes to the latest transmission
                    held.request, held.origin = message, origin
                self._count("joined a running check")
                return None
            if session in self._busy:  # the first transmission's answer is on its way
                self._count("dropped: in progress")
                return None
            kept = self.answers.get(session, now)
            if kept is not None and message.sequence == kept.sequence:
                self._count("retransmission answered")
                return kept.data
            if kept is not None and message.sequence < kept.sequence:
                self._count("dropped: late copy")
                return None
            self._busy.add(session)
        try:
            answer = self._answer(message, sender, key, origin, out)
            if answer is None:  # held while its endpoint is challenged
                return None
            data = self._encode(answer, key)
            if not isinstance(answer, ErrorReply):  # a refusal changes no state
                with self._lock:
                    self.answers.put(session, message.sequence, data, self.wall())
            return data
        finally:
            with self._lock:
                self._busy.discard(session)

    def _answer(
        self,
        message: Request,
        sender: Sender,
        key: Key,
        origin: Origin | None,
        out: list[Send],
    ) -> Answer | None:
        """Act on `message`; return its answer (an ERROR for a failure), or None when
        it is held for the return-routability check."""
        try:
            answer = self._act(message, sender, key, origin, out)
            if answer is None:
                return None
        except NetServError as exc:
            code, reason = self._refused(exc, message.requester, sender), str(exc)
        except Exception:  # a bug: its traceback goes to the log, never to the requester
            log.exception("signaling: %s from %s failed", type(message).__name__, sender[0])
            code, reason = ErrorCode.INTERNAL_ERROR, INTERNAL
            self._count("failed: internal error")
        else:
            self._count(f"answered: {type(message).__name__.lower()}")
            return answer
        return ErrorReply.answering(message, _ms(self.wall()), code, reason)

    def _act(
        self,
        message: Request,
        sender: Sender,
        key: Key,
        origin: Origin | None,
        out: list[Send],
    ) -> Answer | None:
        catalog, service = self.service.catalog, self.service
        if isinstance(message, Probe):
            return self._probe(message, sender)
        requester = message.requester
        if isinstance(message, Teardown):
            service.teardown((requester, message.session_id), requester=requester)
            return Ack.answering(message, _ms(self.wall()))
        request = request_from_description(message.description, catalog, sender)
        group = (requester, message.session_id)
        if isinstance(message, Refresh):
            try:
                service.group(group)
            except NotFound:  # it restarted or lost it: soft state, rebuilt from the refresh
                return self._create(message, request, key, origin, out, rebuilt=True)
            sessions = service.refresh(group, request.lifetime, request, requester)
            return self._ack(message, sessions)
        return self._create(message, request, key, origin, out)

    def _ack(self, message: Setup | Refresh, sessions: list[Session]) -> Ack:
        nodes = tuple(s.node for s in sessions)[: wire.MAX_PATH_NODES]
        return Ack.answering(message, _ms(self.wall()), sessions[0].lifetime, nodes)

    def _create(
        self,
        message: Setup | Refresh,
        request: SessionRequest,
        key: Key,
        origin: Origin | None,
        out: list[Send],
        rebuilt: bool = False,
    ) -> Ack | None:
        """Set up the session `message` asks for: at once when its requester is not
        checked (return the ACK), else reserve it and challenge the claimed endpoint
        (add the CHALLENGE to `out`, return None)."""
        with self.service.lock:
            endpoint = endpoint_to_check(self.service.policy, request)
        if endpoint is None:
            sessions = self.service.create(request, ref=message.session_id)
            if rebuilt:
                self._count("rebuilt from a refresh")
            return self._ack(message, sessions)
        if origin is None:
            raise Unavailable("the return-routability check needs a request punted on-path")
        state = State.PENDING_ROUTABILITY
        reserved = self.service.reserve(request, message.session_id, state)
        check_key = (message.requester, message.session_id, message.sequence)
        try:
            at, toward = self._way_to(endpoint, origin)
            held = _Held(reserved, message, key, origin, toward, rebuilt)
            with self._lock:
                check, _ = self.checks.start(check_key, endpoint, at, message.nonce, self.wall())
                self._held[check_key] = held
        except Exception:
            self.service.withdraw(reserved)
            raise
        self._count("routability: challenged")
        out.append(self._challenge(check, held))
        return None

    def _way_to(self, endpoint: str, origin: Origin) -> tuple[At, Datagram]:
        """Return where the host with address `endpoint` is attached, and the datagram
        its answer to a CHALLENGE will be: from it to port 20051 of the address the
        request was sent to, from the request's own port when the request came from
        it, else from port 20051. Raise Unavailable when that host is not located."""
        with self.service.lock:
            hosts = self.service.network.topology.hosts()
        found = next((h for h in hosts if endpoint in h.ipv4), None)
        request = origin.datagram
        if found is None or request.version != 4:
            raise Unavailable(
                f"host {endpoint} is not located yet (it must send a frame first): the"
                " return-routability check cannot reach it"
            )
        port = request.sport if request.src == endpoint else wire.SIGNALING_PORT
        toward = Datagram(
            eth_src=bytes.fromhex(found.mac.replace(":", "")),
            eth_dst=request.eth_dst,
            version=4,
            src=endpoint,
            dst=request.dst,
            sport=port,
            dport=wire.SIGNALING_PORT,
            payload=b"",
        )
        return (found.at.dpid, found.at.port), toward

    def _challenge(self, check: Check, held: _Held) -> Send:
        """Return the packet-out of `check`'s CHALLENGE, out of the endpoint's port."""
        challenge = challenge_for(held.request, check.cookie, _ms(self.wall()))
        if check.sent > 1:
            challenge = replace(challenge, retransmission=True)
        dpid, port = check.at
        frame = answer_frame(held.toward, encode(challenge))
        return dpid, PacketOut(None, (Output(port),), frame)

    def _confirmed(self, message: ChallengeResponse, origin: Origin, now: float) -> list[Send]:
        """Take a CHALLENGE-RESPONSE punted at `origin`: when it confirms a check,
        install the request it held; return that request's answer."""
        source, at = origin.datagram.src, (origin.dpid, origin.in_port)
        with self._lock:
            check = self.checks.answered(
                source, at, message.session_id, message.sequence, message.nonce, now
            )
            if check is None:
                self._count("dropped: a challenge-response that confirms nothing")
                return []
            held = self._held.pop(check.key)
            session = (check.key[0], check.key[1])
            self._busy.add(session)  # its retransmissions wait for this answer
        self._count("routability: confirmed")
        try:
            try:
                answer: Answer = self._ack(held.request, self.service.install(held.reserved))
            except Exception as exc:
                answer = self._failed(held, exc)
            else:
                self._count(f"answered: {type(held.request).__name__.lower()}")
                if held.rebuilt:
                    self._count("rebuilt from a refresh")
            data = self._encode(answer, held.key)
            if not isinstance(answer, ErrorReply):
                with self._lock:
                    self.answers.put(session, held.request.sequence, data, self.wall())
            return [held.origin.reply(data)]
        finally:
            with self._lock:
                self._busy.discard(session)

    def _failed(self, held: _Held, exc: Exception) -> ErrorReply:
        """Return the ERROR that answers a held request whose installation failed."""
        request, datagram = held.request, held.origin.datagram
        if isinstance(exc, NetServError):
            code = self._refused(exc, request.requester, (datagram.src, datagram.dst))
            return ErrorReply.answering(request, _ms(self.wall()), code, str(exc))
        log.error("signaling: installing a checked request failed", exc_info=exc)
        self._count("failed: internal error")
        return ErrorReply.answering(request, _ms(self.wall()), ErrorCode.INTERNAL_ERROR, INTERNAL)

    def tick(self) -> list[Send]:
        """Return the CHALLENGEs due again; refuse the held requests whose check timed
        out, their reservations withdrawn, and return their ERRORs too."""
        now = self.wall()
        with self._lock:
            due = [(c, self._held[c.key]) for c in self.checks.resend_due(now)]
            gone = [(c, self._held.pop(c.key)) for c in self.checks.expired(now)]
        out = [self._challenge(check, held) for check, held in due]
        for check, held in gone:
            self.service.withdraw(held.reserved)
            self._count("routability: failed")
            request, datagram = held.request, held.origin.datagram
            code = self._refused(check.refusal(), request.requester, (datagram.src, datagram.dst))
            refusal = ErrorReply.answering(request, _ms(now), code, str(check.refusal()))
            out.append(held.origin.reply(self._encode(refusal, held.key)))
        return out

    def _probe(self, probe: Probe, sender: Sender) -> ProbeResponse:
        """Return what the selected NetServ nodes on the probed flow's path offer."""
        ends = flow_ends(probe.flow, sender)
        with self.service.lock:
            dpids = select_nodes(self.service.network, probe.nodes, ends)
            busy = {d: len(self.service.sessions.on_node(d)) for d in dpids}
        modules = tuple(as_source(self.service.catalog).names())
        infos = [
            NodeInfo(
                d, modules, load=busy[d] * wire.MAX_LOAD // len(SESSION_TAGS), sessions=busy[d]
            )
            for d in dpids
        ]
        fitted, truncated = fit_node_infos(infos)
        return ProbeResponse.answering(probe, _ms(self.wall()), fitted, truncated)

    def _encode(self, answer: Answer, key: Key | None) -> bytes:
        return encode(answer) if key is None else sign(answer, key)

    def _refused(
        self, exc: NetServError | SignalingProtocolError, requester: str | None, sender: Sender
    ) -> ErrorCode:
        """Count and log a refusal; return the ERROR code that answers it."""
        with self._lock:
            self.service.rejections.record(exc, TRANSPORT, f"{requester or '?'} at {sender[0]}")
        return exc.code if isinstance(exc, SignalingProtocolError) else signaling_code(exc)

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _reason(exc: NetServError | SignalingProtocolError) -> str:
    return exc.reason if isinstance(exc, SignalingProtocolError) else str(exc)


# A PROBE-RESPONSE's room for NODE_INFO objects: a message less its header and an AUTH.
_ROOM = wire.MAX_MESSAGE_SIZE - wire.HEADER_SIZE - (wire.OBJECT_HEADER.size + 8 + 32)
_NODE_INFO_FIXED = 16


def _size(info: NodeInfo) -> int:
    value = _NODE_INFO_FIXED + sum(1 + len(m.encode()) for m in info.modules)
    return wire.OBJECT_HEADER.size + value + (-value % wire.ALIGN)


def fit_node_infos(infos: list[NodeInfo]) -> tuple[tuple[NodeInfo, ...], bool]:
    """Return the leading entries of `infos` that fit one signed PROBE-RESPONSE (the
    last one cut to the modules that fit), and whether anything was left out."""
    out: list[NodeInfo] = []
    room = _ROOM
    for info in infos[: wire.MAX_PATH_NODES]:
        if _size(info) <= room:
            out.append(info)
            room -= _size(info)
            continue
        modules = list(info.modules)
        while modules and _size(NodeInfo(info.dpid, tuple(modules))) > room:
            modules.pop()
        if _size(NodeInfo(info.dpid, tuple(modules))) <= room:
            out.append(NodeInfo(info.dpid, tuple(modules), info.load, info.sessions))
        return tuple(out), True
    return tuple(out), len(infos) > len(out)
