"""On-path signaling at the controller: a punted datagram in, its answer's packet-out out.

    handler = SignalingHandler(service)
    msgs = handler.packet_in(dpid, in_port, frame)    # run off Ryu's event loop: it waits

Checks, in the order docs/signaling.md gives, each refusal answered with its ERROR
code (when the message can be answered at all), logged and counted (the service's
`rejections`, as REST's), with no state changed: decoding (1xx), the requester's key
in the policy (203, or 200 unsigned), the MAC (200), the timestamp and nonce (202,
201), the sequence number (a retransmission gets the stored answer, a late copy
nothing), then the request itself, which becomes a SessionRequest
(`controller/requests.py`) for the same service methods REST calls, the policy's
checks among them. Answers to a signed request are signed with the requester's key.

Pure apart from what is handed in: the service (and its policy), the wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from controller.errors import (
    NetServError,
    NotFound,
    Unauthenticated,
    UnknownRequester,
    signaling_code,
)
from controller.messages import Message, Output, PacketOut
from controller.modules import as_source
from controller.placement import select_nodes
from controller.requests import flow_ends, request_from_description
from controller.service import NetServService
from controller.sessions import SESSION_TAGS
from controller.sigframes import answer_frame, parse_datagram
from signaling import wire
from signaling.auth import Key, sign, verify
from signaling.codec import decode, encode
from signaling.errors import ErrorCode, SignalingProtocolError
from signaling.freshness import ReplayGuard
from signaling.messages import (
    Ack,
    Answer,
    ErrorReply,
    Probe,
    ProbeResponse,
    Refresh,
    Request,
    Teardown,
)
from signaling.values import NodeInfo

log = logging.getLogger("netserv.signaling")

# A request's answer is kept this long for its retransmissions: longer than a requester
# retransmits a SETUP or TEARDOWN (23 s) and than the freshness window (30 s), past
# which a copy of the request is refused by its timestamp anyway.
ANSWER_KEEP = 60.0
ANSWER_CAPACITY = 10_000  # answers kept at most; the oldest go first
INTERNAL = "internal error; the controller's log has the details"
Sender = tuple[str, str]  # the signaling datagram's source and destination addresses
TRANSPORT = "signaling"  # what refusals are counted under, beside REST's


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
    ) -> None:
        self.service = service
        self.wall = wall
        self.guard = guard or ReplayGuard()
        self.answers = answers or AnswerCache()
        self.counts: Counter[str] = Counter()
        self._busy: set[tuple[str, int]] = set()
        self._lock = threading.RLock()  # counting happens under it too

    def packet_in(self, dpid: int, in_port: int, frame: bytes) -> list[Message]:
        """Handle a frame the switch `dpid` punted from `in_port`; return the packet-out
        of its answer, or nothing (not signaling, or not to be answered)."""
        datagram = parse_datagram(frame)
        if datagram is None:
            self._count("dropped: not a signaling datagram")
            return []
        answer = self.respond(datagram.payload, (datagram.src, datagram.dst))
        if answer is None:
            return []
        return [PacketOut(None, (Output(in_port),), answer_frame(datagram, answer))]

    def respond(self, payload: bytes, sender: Sender) -> bytes | None:
        """Return the answer to the signaling message `payload`, or None when it gets none."""
        self._count("received")
        now = self.wall()
        try:
            message = decode(payload)
        except SignalingProtocolError as exc:
            echo = exc.echo
            if echo is None or not echo.answerable:
                self._count("dropped: unreadable")
                return None
            self._refused(exc, None, sender)
            return encode(ErrorReply.answering(echo, _ms(now), exc.code, exc.reason))
        if message.TYPE.is_response:
            self._count("dropped: an answer")
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
        return self._sequenced(message, key, sender, now)

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

    def _sequenced(self, message: Request, key: Key, sender: Sender, now: float) -> bytes | None:
        """Act on `message` unless it repeats (or comes before) the last request of its
        session acted on; return the answer."""
        session = (message.requester, message.session_id)
        with self._lock:
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
            answer = self._answer(message, sender)
            data = self._encode(answer, key)
            if not isinstance(answer, ErrorReply):  # a refusal changes no state
                with self._lock:
                    self.answers.put(session, message.sequence, data, self.wall())
            return data
        finally:
            with self._lock:
                self._busy.discard(session)

    def _answer(self, message: Request, sender: Sender) -> Answer:
        """Act on `message`; return its answer (an ERROR for a failure)."""
        try:
            answer = self._act(message, sender)
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

    def _act(self, message: Request, sender: Sender) -> Answer:
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
                sessions = service.create(request, ref=message.session_id)
                self._count("rebuilt from a refresh")
            else:
                sessions = service.refresh(group, request.lifetime, request, requester)
        else:
            sessions = service.create(request, ref=message.session_id)
        nodes = tuple(s.node for s in sessions)[: wire.MAX_PATH_NODES]
        return Ack.answering(message, _ms(self.wall()), sessions[0].lifetime, nodes)

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
