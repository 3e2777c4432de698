"""The node agent: hosts the service modules of one NetServ node.

Three threads around one `NodeAgent`: the packet loop (port → dispatcher → port), the
control API (the controller attaches and detaches session chains), and housekeeping
(registration with the controller, which doubles as its heartbeat, and expiry of
chains whose lifetime ran out: the agent's soft state does not depend on the
controller being alive). Neither costs more with more chains: the registration carries
the digest of the sessions held and gets the controller's list only when its own
differs (`agentproto/held.py`), and expiry looks only at the chains due
(`nodes/expiry.py`). Under a supervisor (`nodes/supervisor.py`) a fourth, the
watchdog, beats on a pipe while the packet loop comes round.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agentproto.fields import ContractError
from agentproto.limits import EXPIRY_GRACE, HEARTBEAT, REGISTER_TIMEOUT
from agentproto.messages import (
    AgentStatus,
    Attach,
    ChainStats,
    LoadedModule,
    ModuleSpec,
    NodeIO,
    Refresh,
    Registration,
    RegistrationReply,
    Upgrade,
)
from controller import gcpolicy
from controller.auth import Signer, agent_key_id, controller_key_id
from jsonhttp.client import ClientError, call_json
from nodes import handover
from nodes.bundle import BundleError, Catalog
from nodes.bundlecache import BundleCache, fetch_from
from nodes.dispatcher import Chain, Dispatcher, ModuleHung, Outgoing, mode_refusal
from nodes.expiry import ExpiryQueue
from nodes.host import ModuleHost, ModuleLoadError
from nodes.module_api import ServiceModule
from nodes.packet_io import PacketSocket
from nodes.sandbox.batched import ModuleFailed
from nodes.sandbox.guard import Guard, Quarantined
from nodes.sandbox.policy import TierPolicy
from nodes.sockdiag import packet_socket_drops

log = logging.getLogger("netserv.agent")
# A frame that waited longer in the receive queue is stale: the flow has gone on without
# it (the controller takes the detour out within a second of a hang), and sending it
# now would deliver it late and out of order.
MAX_FRAME_AGE = 0.5
LOOP_TURN = 0.1  # the packet loop comes round at least this often, frames or not
WATCHDOG_BEAT = 0.1
# The watchdog stops beating when the packet loop has not come round this long: longer
# than an isolated module's hang may hold it (its deadline, nodes/sandbox/budgets.py),
# so a module's hang, which the node contains, is not taken for the node's. A trusted
# module that holds the loop this long is interrupted (ModuleHung) and quarantined.
LOOP_STALL = 0.5


def _never() -> bool:
    return False


class Refused(Exception):
    """The controller refused this agent: another live agent serves the node."""


class AttachError(Exception):
    """A well-formed attach this agent cannot carry out; `status` is the HTTP status the
    control API returns (409: the tag is another session's, 422: a module cannot be
    loaded or set up, or is not observe-only here while the attach is a copy). A
    malformed one never gets here: `Attach` refuses it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def chain_stats(chain: Chain) -> ChainStats:
    """Return a chain's counters as the contract carries them."""
    return ChainStats.from_json(chain.stats())


@dataclass(frozen=True)
class AgentConfig:
    dpid: int
    iface: str
    switch_port: str
    controller: str  # base URL of the controller's REST API
    heartbeat: float = HEARTBEAT
    # The node's key (controller/keyfiles.py): it signs the registrations, and the
    # control API takes only calls signed with it. Without one, nothing is taken.
    key: bytes = field(default=b"", repr=False)
    # Which modules run in the agent's process, what isolated ones are granted.
    policy: TierPolicy = field(default_factory=TierPolicy)
    max_frame_age: float | None = MAX_FRAME_AGE  # None: no frame is too old
    port_type: str = ""  # how the bridge reads its ports, as the topology said ("": unknown)


class NodeAgent:
    def __init__(
        self, config: AgentConfig, catalog: Catalog, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.signer = Signer(config.key, agent_key_id(config.dpid), controller_key_id(config.dpid))
        self.bundles = BundleCache(catalog, fetch_from(config.controller, self.signer))
        self.host = ModuleHost(self.bundles, config.dpid, clock, config.policy)
        self._refs: dict[int, list[str]] = {}  # id() of a chain: its modules' host refs
        self.dispatcher = Dispatcher(clock)
        self.expiry = ExpiryQueue()  # the chains by when they expire
        self.clock = clock
        self.boot_id = uuid.uuid4().hex
        self.url = ""  # set once the control API listens
        self.registered = threading.Event()
        self.stopping = threading.Event()
        self.refused = ""  # the controller's reason, once it refused this agent
        self.last_heartbeat: float | None = None  # when the controller last took one
        self._heap = gcpolicy.FreezePolicy()  # chains' objects kept out of collections
        self._failures = 0  # registrations in a row that did not reach the controller
        self.io_counters = {"received": 0, "sent": 0, "dropped": 0, "send_failed": 0, "stale": 0}
        self.stale: dict[int, int] = {}  # by session: frames dropped for their age
        self.loop_turn = LOOP_TURN
        self.loop_turns = 0  # the packet loop's rounds, which the watchdog follows
        self._loop_thread = 0  # the packet loop's thread id, for the watchdog
        self._io: PacketSocket | None = None
        self._lock = threading.Lock()
        self._batch_end = threading.Condition(threading.Lock())
        self._in_batch = False  # the packet loop is running modules on a batch
        # Held by the packet loop while it runs a batch, and by a hot upgrade while it
        # swaps a module: frames that come meanwhile wait for the next batch.
        self._between_batches = threading.Lock()
        self._batches = 0  # batches finished, so a waiter sees one end

    # --- chains (called by the control API) ----------------------------------------
    def attach(self, request: Attach) -> Chain:
        """Build and install a session's chain as the controller asks; return it.

        The chain runs in the mode the request says (`Attach.copy`): copies, or a
        detour. It is kept for the request's lifetime plus EXPIRY_GRACE. Raise
        AttachError: a copy of a module that is not observe-only here is refused
        (422), the session's chain, if any, left as it was.
        """
        session_id, tag, lifetime = request.session_id, request.tag, request.lifetime
        refs = self._module_refs(request.modules)  # bundles are fetched before anything changes
        with self._lock:
            other = self.dispatcher.by_tag(tag)
            if other is not None and other.session_id != session_id:
                raise AttachError(f"tag {tag} belongs to session {other.session_id}", 409)
            instances = self._instantiate(session_id, request.modules, refs)
            now = self.clock()
            guards = [self.host.guard(module) for _, module in instances]
            why = mode_refusal(request.copy, [n for n, _ in instances], guards)
            if why:
                self._release(refs, instances)
                raise AttachError(f"session {session_id} not attached: {why}", 422)
            expires = now + lifetime + EXPIRY_GRACE
            chain = Chain(
                session_id,
                tag,
                instances,
                expires,
                lifetime,
                attached_at=now,
                guards=guards,
                copy=request.copy,
            )
            self._refs[id(chain)] = refs
            old = self.dispatcher.put(chain)
            self.expiry.add(session_id, expires)
        if old is not None:
            self._quiesce()
            self._stop(old)
        log.info(
            "session %d attached: tag %d, modules %s%s",
            session_id,
            tag,
            [n for n, _ in instances],
            " (observe-only: copies, nothing sent back)" if chain.copy else "",
        )
        return chain

    def _module_refs(self, modules: tuple[ModuleSpec, ...]) -> list[str]:
        """Return what the host loads each requested module by, fetching and checking the
        bundles of the repository's modules that this agent does not hold yet."""
        refs = []
        for module in modules:
            try:
                refs.append(
                    self.bundles.ref(module.name, module.version or None, module.sha256 or None)
                )
            except BundleError as exc:
                raise AttachError(str(exc), 422) from None
        return refs

    def _instantiate(
        self, session_id: int, modules: tuple[ModuleSpec, ...], refs: list[str]
    ) -> list[tuple[str, ServiceModule]]:
        """Return one instance per requested module; on any failure release them all."""
        instances: list[tuple[str, ServiceModule]] = []
        try:
            for module, ref in zip(modules, refs, strict=True):
                try:
                    instance = self.host.instantiate(ref, dict(module.params), session_id)
                except ModuleLoadError as exc:
                    raise AttachError(str(exc), 422) from None
                instances.append((module.name, instance))
        except AttachError:
            self._release(refs, instances)
            raise
        return instances

    def _release(self, refs: list[str], instances: list[tuple[str, ServiceModule]]) -> None:
        """Stop instances made for a chain that is not installed."""
        for ref, (_, instance) in zip(refs, instances, strict=False):
            self.host.release(ref, instance)

    def upgrade(self, request: Upgrade) -> Chain:
        """Replace one module of a session's chain by another version of it, its state
        handed over; return the chain.

        The new version's bundle is fetched and checked and its instance made (an
        isolated one's worker started) while the old one serves on. Then, between two
        batches of the packet loop, the old instance's state is exported and imported
        into the new one, and the new one takes the old one's place: no frame is lost
        or reordered, the frames that come meanwhile wait for the next batch. A module
        without `export_state` (or a new one without `import_state`, or an old one that
        was quarantined) hands nothing over: the new one starts afresh. The chain keeps
        its mode (copies or a detour: what the switch holds). Raise KeyError when there
        is no chain, AttachError when the module is not at that position (409), the
        chain is a copy and the new version is not observe-only here (409), or the new
        version cannot be loaded, made, or take the state (422): the old instance then
        runs on, nothing changed.
        """
        spec, pos = request.module, request.position
        with self._lock:
            chain = self.dispatcher.by_session(request.session_id)
            if chain is None:
                raise KeyError(request.session_id)
            if pos >= len(chain.modules) or chain.modules[pos][0] != spec.name:
                found = chain.modules[pos][0] if pos < len(chain.modules) else "nothing"
                raise AttachError(
                    f"position {pos} of the chain holds {found}, not {spec.name}", 409
                )
            (ref,) = self._module_refs((spec,))
            ((_, new),) = self._instantiate(chain.session_id, (spec,), [ref])
            why = mode_refusal(chain.copy, [spec.name], [self.host.guard(new)])
            if why:
                self.host.release(ref, new)
                raise AttachError(f"{spec.name} {spec.version} not taken: {why}", 409)
            try:
                with self._between_batches:
                    old = self._hand_over(chain.modules[pos][1], chain.guards[pos], new)
                    self.dispatcher.swap(chain, pos, new, self.host.guard(new))
            except (handover.HandoverError, ModuleFailed) as exc:
                self.host.release(ref, new)
                why = f"{spec.name} {spec.version} not taken, the old version stays: {exc}"
                raise AttachError(why, 422) from None
            refs = self._refs.setdefault(id(chain), [name for name, _ in chain.modules])
            old_ref, refs[pos] = refs[pos], ref
        self.host.release(old_ref, old)
        log.info("session %d: %s upgraded to %s", chain.session_id, spec.name, spec.version or ref)
        return chain

    @staticmethod
    def _hand_over(old: ServiceModule, guard: Guard, new: ServiceModule) -> ServiceModule:
        """Move `old`'s state into `new` (nothing when either cannot, or `old` was
        quarantined: its worker may be gone); return `old`. Raise HandoverError, or
        ModuleFailed when an isolated module's worker hung or died."""
        if guard.quarantined or isinstance(old, Quarantined) or not handover.exports(old):
            return old
        try:
            state = handover.copy(old.export_state())  # type: ignore[attr-defined]
            if handover.imports(new):
                new.import_state(state)  # type: ignore[attr-defined]
        except (handover.HandoverError, ModuleFailed):
            raise
        except Exception as exc:  # the module's own code failed
            raise handover.HandoverError(f"the state was not handed over: {exc!r}") from None
        return old

    def refresh(self, request: Refresh) -> Chain:
        """Extend a chain's soft state to the request's lifetime plus EXPIRY_GRACE from
        now; return it. Raise KeyError when there is none."""
        chain = self.dispatcher.by_session(request.session_id)
        if chain is None:
            raise KeyError(request.session_id)
        chain.lifetime = request.lifetime
        chain.expires = self.clock() + request.lifetime + EXPIRY_GRACE
        self.expiry.add(chain.session_id, chain.expires)
        return chain

    def detach(self, session_id: int) -> ChainStats | None:
        """Remove a session's chain; return its final counters, or None when there is none."""
        with self._lock:
            chain = self.dispatcher.remove(session_id)
            self.expiry.discard(session_id)
        if chain is None:
            return None
        self._quiesce()
        try:
            stats = replace(chain_stats(chain), stale=self.stale.pop(session_id, 0))
        finally:  # the chain is out of the map: its modules stop whatever its counters say
            self._stop(chain)
        log.info("session %d detached after %d packets", session_id, chain.packets)
        return stats

    def _quiesce(self, timeout: float = 1.0) -> None:
        """Wait until no module runs on a frame dispatched before the map last changed.

        Called after a chain left the map and before its modules stop: the packet loop
        may still be inside one of them with a frame it looked up a moment earlier.
        A batch that starts now reads the new map, so waiting for the current one to
        end is enough.
        """
        with self._batch_end:
            if self._in_batch:
                seen = self._batches
                self._batch_end.wait_for(lambda: self._batches != seen, timeout)

    def _stop(self, chain: Chain) -> None:
        refs = self._refs.pop(id(chain), [name for name, _ in chain.modules])
        for ref, (_, module) in zip(refs, chain.modules, strict=True):
            self.host.release(ref, module)

    def status(self) -> AgentStatus:
        """Return the agent's own view: identity, loaded modules, sessions, I/O counters."""
        return AgentStatus(
            dpid=self.config.dpid,
            iface=self.config.iface,
            switch_port=self.config.switch_port,
            boot_id=self.boot_id,
            pid=os.getpid(),
            registered=self.registered.is_set(),
            modules_loaded={
                name: LoadedModule(str(m["version"]), int(m["sessions"]), str(m["tier"]))
                for name, m in self.host.loaded().items()
            },
            tiers=self.host.describe(),
            sessions=tuple(c.session_id for c in self.dispatcher.chains()),
            io=self.io_stats(),
        )

    def io_stats(self) -> NodeIO:
        """Return the node's frame counters, every session together, since the agent started.

        Besides what the packet loop counted: frames the kernel dropped because the
        agent's receive queue was full (`queue_dropped`), frames too big for its
        buffer (`too_big`), and frames back from the agent that the switch's own
        receive queue on the agent port dropped (`switch_queue_dropped`, None when
        the switch reads the port some other way). None of these carry a session.
        """
        io = self._io
        return NodeIO(
            **{**self.io_counters, "stale": self.io_counters["stale"] + getattr(io, "stale", 0)},
            unmatched=self.dispatcher.unmatched,
            queue_dropped=io.queue_dropped() if io else 0,
            too_big=io.too_big if io else 0,
            switch_queue_dropped=packet_socket_drops(self.config.switch_port),
        )

    def session_stats(self, session_id: int) -> ChainStats:
        """Return a chain's counters with the node's; KeyError when there is none."""
        chain = self.dispatcher.by_session(session_id)
        if chain is None:
            raise KeyError(session_id)
        stats = replace(chain_stats(chain), stale=self.stale.get(session_id, 0))
        return stats.with_node(self.io_stats())

    # --- loops ---------------------------------------------------------------------
    def packet_loop(self, io: PacketSocket) -> None:
        """Receive, dispatch and send back frames until stopping is set."""
        self._io = io
        counters, dispatcher = self.io_counters, self.dispatcher
        self._loop_thread = threading.get_ident()
        late = getattr(io, "late", _never)  # a socket without receive times: never late
        while not self.stopping.is_set():
            batch = io.recv_batch()
            self.loop_turns += 1
            if getattr(io, "stale_tags", None):
                self._count_stale(io.stale_tags)
            if not batch and not dispatcher.timers_due():
                continue
            self._between_batches.acquire()
            try:
                with self._batch_end:
                    self._in_batch = True
                out = dispatcher.run_batch(batch)
                if out and late():  # stopped between receive and send: too late to send
                    self._count_late(out)
                    out = Outgoing()
                sent = io.send_batch(out.frames) if out else 0
                dispatcher.count_sent(out, sent)
            finally:
                with self._batch_end:
                    self._in_batch = False
                    self._batches += 1
                    self._batch_end.notify_all()
                self._between_batches.release()
            counters["received"] += len(batch)
            counters["dropped"] += len(batch) - out.forwarded - out.copies  # copies stay
            counters["sent"] += sent
            counters["send_failed"] += len(out) - sent

    def _count_stale(self, tags: list[int | None]) -> None:
        """Charge the frames dropped on receive for their age to their sessions."""
        for tag in tags:
            chain = self.dispatcher.by_tag(tag) if tag is not None else None
            if chain is not None:
                self.stale[chain.session_id] = self.stale.get(chain.session_id, 0) + 1

    def _count_late(self, out: Outgoing) -> None:
        """Count a batch handled but not sent, its frames now too old, as stale."""
        self.io_counters["stale"] += len(out)
        for chain, emitted in out.owners:
            if chain is not None and not emitted:
                self.stale[chain.session_id] = self.stale.get(chain.session_id, 0) + 1

    def watchdog_loop(
        self, fd: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Follow the packet loop every WATCHDOG_BEAT seconds until stopping is set.

        While it comes round, write a byte to `fd` (the supervisor's pipe, if any);
        before it starts (while registering) the agent counts as alive. A loop held in
        a batch longer than LOOP_STALL (a trusted module that does not return) is
        interrupted once: ModuleHung is raised in its thread, and the module is
        quarantined. A supervisor that is gone (a broken pipe) stops the agent.
        """
        if fd is not None:
            os.set_blocking(fd, False)
        seen, changed, interrupted = self.loop_turns, clock(), -1
        while not self.stopping.is_set():
            now = clock()
            if self.loop_turns != seen:
                seen, changed = self.loop_turns, now
            stalled = self._io is not None and now - changed > LOOP_STALL
            if stalled and self._in_batch and interrupted != seen:
                interrupted = seen
                self._interrupt(now - changed)
            if fd is not None and not stalled:
                try:
                    os.write(fd, b".")
                except BlockingIOError:  # the supervisor reads later: it is stopped itself
                    pass
                except OSError as exc:
                    if exc.errno != errno.EPIPE:
                        raise
                    log.error("the supervisor is gone; stopping")
                    self.stopping.set()
                    return
            self.stopping.wait(WATCHDOG_BEAT)

    def _interrupt(self, held: float) -> None:
        """Raise ModuleHung in the packet loop's thread, held in a batch for `held` s."""
        log.warning("the packet loop is held in a module for %.1f s: interrupting it", held)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self._loop_thread), ctypes.py_object(ModuleHung)
        )

    def expire_due(self) -> list[int]:
        """Detach the chains whose lifetime (plus grace) ran out; return their session ids."""
        due = self.expiry.pop_due(self.clock(), self._expires_of)
        for session_id in due:
            log.warning("session %d expired at the agent (no refresh or teardown came)", session_id)
            self.detach(session_id)
        return due

    def _expires_of(self, session_id: int) -> float | None:
        chain = self.dispatcher.by_session(session_id)
        return None if chain is None else chain.expires

    def reconcile(self, listed: list[int], asked_at: float) -> list[int]:
        """Detach chains the controller does not list; return their session ids.

        Only chains attached before the registration was sent are judged: the
        controller lists a session before it asks for its chain, so a chain missing
        from a newer list is an orphan (its controller restarted), while one attached
        after the request may simply be newer than the list.
        """
        keep = set(listed)
        orphans = [
            c.session_id
            for c in self.dispatcher.chains()
            if c.session_id not in keep and c.attached_at < asked_at
        ]
        for session_id in orphans:
            log.warning("session %d is unknown to the controller; detaching it", session_id)
            self.detach(session_id)
        return orphans

    def register_once(self) -> None:
        """Register with the controller (or renew the heartbeat) and drop orphan chains.

        The registration carries the digest of the sessions held when it was sent; the
        controller answers "same" when its own sessions on the node have that digest
        (none is an orphan, and none needs looking at), else with their list.
        The registration is signed with the node's key and only an answer signed by
        the controller counts. Raise Refused when the controller will not have this
        agent for the node, and ClientError when it cannot be reached or answers with
        another error (or does not sign its answer, or breaks the contract).
        """
        with self._lock:  # the chains the digest is of are those attached before asked_at
            asked_at, held = self.clock(), self.dispatcher.held
        request = Registration(
            self.config.dpid,
            self.config.switch_port,
            self.url,
            self.boot_id,
            self.config.port_type,
            held,
        )
        url = self.config.controller.rstrip("/") + request.path
        try:
            raw = call_json(
                url, request.METHOD, request.to_json(), REGISTER_TIMEOUT, signer=self.signer
            )
        except ClientError as exc:
            if exc.status == Registration.REFUSED:
                raise Refused(exc.message) from None
            raise
        try:
            reply = RegistrationReply.from_json(raw)
            if reply.dpid != self.config.dpid:
                raise ContractError(f"it is for node {reply.dpid:016x}")
        except ContractError as exc:
            raise ClientError(0, f"the controller's answer breaks the contract: {exc}") from None
        if reply.sessions is not None:  # None: it holds what this agent held at asked_at
            self.reconcile(list(reply.sessions), asked_at)

    def register(self) -> bool:
        """Try to register once; return True when registered.

        A refusal sets `refused` and `stopping`: a second agent for a node must not
        serve beside the first, nor keep asking.
        """
        try:
            self.register_once()
        except Refused as exc:
            self.refused = str(exc)
            self.stopping.set()
            return False
        except ClientError as exc:  # unreachable, HTTP error, bad reply
            self._failures += 1
            if self._failures == 1 or self._failures % 30 == 0:
                log.warning("cannot reach controller %s: %s", self.config.controller, exc)
            return False
        if not self.registered.is_set() or self._failures:
            log.info("registered with %s", self.config.controller)
        self.last_heartbeat = self.clock()
        self.registered.set()
        self._failures = 0
        return True

    def housekeeping_loop(self) -> None:
        """Heartbeat to the controller and expire chains, until stopping is set."""
        while not self.stopping.is_set():
            if not self.register() and self.refused:
                return
            try:
                self.expire_due()
            except Exception:
                log.exception("expiry failed")
            # Its chains' objects, as the controller's sessions, out of the collector's walks.
            gcpolicy.apply(self._heap.step(len(self.dispatcher), time.monotonic()))
            self.stopping.wait(self.config.heartbeat)
