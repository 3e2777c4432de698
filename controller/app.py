"""The Ryu application: a shim between OpenFlow events and the session service.

Each handler finds the switch, calls the service or network logic, and sends what it
returns. Waiting for a barrier reply must never happen on Ryu's event loop (the reply
is delivered by that loop), so handlers that need it spawn a green thread: on-path
signaling, which may install sessions, is handled so.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from ryu import cfg
from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3
from ryu.ofproto.ofproto_common import OFP_TCP_PORT

from agentproto.limits import AGENT_DEAD_AFTER
from controller import gcpolicy, keyfiles, ofwire, pipeline, tables
from controller.agent_client import AgentClient
from controller.auth import RestAuth
from controller.errors import NetServError, PartFailed, PolicyError, Unavailable
from controller.messages import Barrier, Message, Stats, StatsRequest
from controller.metrics import ControllerCollector, Counts, wsgi_app
from controller.modules import ModuleSource
from controller.ofbuild import build, flow_stats, port_stats
from controller.policy import OPERATOR_ONLY, load_policy
from controller.repository import Repository
from controller.repository import default_path as default_repository
from controller.rest import AUTH, INSTANCE, SIGNALING, TRACER, RestApi
from controller.routability import TIMEOUT as ROUTABILITY_TIMEOUT
from controller.routability import ReturnRoutability
from controller.service import NetServService
from controller.signaling import Send, SignalingHandler
from controller.store import SessionStore, StoreError, default_path
from controller.topology import PROBE_INTERVAL
from controller.trace import OvsAppctl, Tracer
from nodes.bundle import Catalog, module_path

log = logging.getLogger("netserv.controller")
BARRIER_TIMEOUT = 5.0
STATS_TIMEOUT = 5.0
TICK = 1.0
CHALLENGE_TICK = 0.1  # how often CHALLENGEs due again and checks timed out are looked for
DISCOVERY_COOKIE = tables.cookie(tables.KIND_DISCOVERY)
SIGNALING_COOKIE = tables.cookie(tables.KIND_SIGNALING)


def _tune_logging(verbose: bool) -> None:
    """Give Ryu's log lines times, as the agents' have, and quiet its HTTP access log."""
    stamped = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    # No format here names a thread or process; under eventlet, finding the current
    # thread for each record was half the cost of a session's log line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for handler in logging.getLogger().handlers:
        handler.setFormatter(stamped)
    if not verbose:  # one access-log line per agent heartbeat would drown the rest
        logging.getLogger("ryu.lib.hub").setLevel(logging.WARNING)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


class RyuSwitches:
    """Sends message descriptions to connected datapaths; confirms batches by barrier;
    asks for statistics and waits for the reply."""

    def __init__(self) -> None:
        self.datapaths: dict[int, Any] = {}
        self._pending: dict[tuple[int, int], dict[str, Any]] = {}
        self.counts = Counts()  # what was sent and received, for the metrics

    def send(self, dpid: int, msgs: list[Message], wait: bool = True) -> None:
        """Send `msgs`; with wait and a closing Barrier, block until it is answered.

        Raise Unavailable when the switch is gone or silent, PartFailed when it
        answered one of the batch with an error.
        """
        dp = self.datapaths.get(dpid)
        if dp is None:
            raise Unavailable(f"switch {dpid:016x} is not connected")
        batch: dict[str, Any] = {"xids": set(), "errors": [], "done": hub.Event()}
        self.counts.count_sent(dpid, msgs)
        barrier_xid = None
        bufs = []
        for msg in msgs:
            # Ryu's Datapath.set_xid, for a message Ryu never sees as an object.
            dp.xid = xid = (dp.xid + 1) & dp.ofproto.MAX_XID
            batch["xids"].add(xid)
            if isinstance(msg, Barrier) and wait:
                barrier_xid = xid
                self._pending[(dpid, xid)] = batch
            buf = ofwire.encode(msg, xid)
            if buf is None:
                ryu_msg = build(dp, msg)
                ryu_msg.set_xid(xid)
                ryu_msg.serialize()
                buf = ryu_msg.buf
            bufs.append(buf)
        # One write for the batch: each message queued alone cost a greenthread switch
        # and a system call, and the switch reads them as one.
        dp.send(b"".join(bufs))
        if barrier_xid is None:
            return
        try:
            if not batch["done"].wait(timeout=BARRIER_TIMEOUT):
                raise Unavailable(f"switch {dpid:016x} did not answer within {BARRIER_TIMEOUT}s")
        finally:
            self._pending.pop((dpid, barrier_xid), None)
        if batch["errors"]:
            raise PartFailed(f"switch {dpid:016x} refused: {'; '.join(batch['errors'])}")

    def request(self, dpid: int, msg: StatsRequest) -> list[Stats]:
        """Send a statistics request; wait for every part of its reply; return the records.

        Raise Unavailable when the switch is gone or silent, PartFailed when it
        answered with an error.
        """
        dp = self.datapaths.get(dpid)
        if dp is None:
            raise Unavailable(f"switch {dpid:016x} is not connected")
        ryu_msg = build(dp, msg)
        xid = dp.set_xid(ryu_msg)
        wait: dict[str, Any] = {"xids": {xid}, "errors": [], "done": hub.Event(), "records": []}
        self._pending[(dpid, xid)] = wait
        try:
            dp.send_msg(ryu_msg)
            if not wait["done"].wait(timeout=STATS_TIMEOUT):
                raise Unavailable(f"switch {dpid:016x} did not answer within {STATS_TIMEOUT}s")
        finally:
            self._pending.pop((dpid, xid), None)
        if wait["errors"]:
            raise PartFailed(f"switch {dpid:016x} refused: {'; '.join(wait['errors'])}")
        return wait["records"]

    def barrier_reply(self, dpid: int, xid: int) -> None:
        batch = self._pending.get((dpid, xid))
        if batch is not None:
            batch["done"].set()

    def stats_reply(self, dpid: int, xid: int, records: list[Stats], more: bool) -> None:
        wait = self._pending.get((dpid, xid))
        if wait is not None:
            wait["records"].extend(records)
            if not more:
                wait["done"].set()

    def error(self, dpid: int, xid: int, text: str) -> None:
        for (pdpid, pxid), batch in self._pending.items():
            if pdpid == dpid and xid in batch["xids"]:
                batch["errors"].append(text)
                if pxid == xid:  # the awaited message itself failed: no other reply comes
                    batch["done"].set()


class NetServApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conf = cfg.CONF
        _tune_logging(conf.verbose)  # before the sessions taken back are logged
        # Set by controller/entry.py; read here too when ryu-manager runs this app itself.
        folders = module_path(getattr(conf, "netserv_module_path", None))
        dead_after = float(getattr(conf, "netserv_agent_dead_after", None) or AGENT_DEAD_AFTER)
        cap = tables.parse_hard_timeout_cap(os.environ.get(tables.HARD_TIMEOUT_CAP_ENV))
        of_port = conf.ofp_tcp_listen_port or OFP_TCP_PORT
        store_path = getattr(conf, "netserv_store", None) or str(default_path(of_port))
        try:
            self.store = SessionStore(store_path)
        except StoreError as exc:  # entry.py checks first; this is for ryu-manager alone
            raise SystemExit(f"netserv controller: {exc}") from None
        policy_file = getattr(conf, "netserv_policy", None)
        policy = load_policy(policy_file) if policy_file else OPERATOR_ONLY
        secrets = keyfiles.secrets_dir(getattr(conf, "netserv_secrets", None))
        node_keys = keyfiles.NodeKeys(secrets)
        repository = Repository(
            getattr(conf, "netserv_repo", None) or default_repository(store_path)
        )
        modules = ModuleSource(Catalog(folders), repository, lambda: self.service.policy.modules)
        self.switches = RyuSwitches()
        self.service = NetServService(
            modules,
            self.switches,
            AgentClient(node_keys),
            time.monotonic,
            threading.Lock(),
            dead_after,
            cap,
            policy,
            store=self.store,
        )
        token = keyfiles.token_path(secrets)
        auth = RestAuth(
            keyfiles.operator_token(secrets, create=True),
            node_keys,
            requester=lambda token: self.service.policy.rest_requester(token),  # after reloads
            token_hint=str(token),
        )
        timeout = float(getattr(conf, "netserv_routability_timeout", None) or ROUTABILITY_TIMEOUT)
        self.signaling = SignalingHandler(self.service, checks=ReturnRoutability(timeout))
        kwargs["wsgi"].register(
            RestApi,
            {
                INSTANCE: self.service,
                AUTH: auth,
                SIGNALING: self.signaling,
                TRACER: Tracer(self.service, OvsAppctl()),
            },
        )
        self._reload_wanted = False
        if policy.configured:
            signal.signal(signal.SIGHUP, self._want_reload)
        self._heap = gcpolicy.FreezePolicy()  # the sessions' objects kept out of collections
        self._ticker = hub.spawn(self._tick_loop)
        self._prober = hub.spawn(self._probe_loop)
        self._challenger = hub.spawn(self._challenge_loop)
        self._serve_metrics(conf)
        log.info(
            "NetServ controller up: REST http://%s:%d/netserv/, OpenFlow %s:%d, modules from %s",
            conf.wsapi_host,
            conf.wsapi_port,
            conf.ofp_listen_host or "*",
            of_port,
            os.pathsep.join(str(f) for f in folders),
        )
        if policy.configured:
            log.info("requester policy from %s (SIGHUP reads it again)", policy.source)
        log.info(
            "the operator's REST token is in %s; node keys in %s",
            token,
            token.parent / keyfiles.NODES,
        )
        if cap != tables.HARD_TIMEOUT_CAP:
            log.info("detours' hard timeouts capped at %d s (%s)", cap, tables.HARD_TIMEOUT_CAP_ENV)
        log.info("module repository in %s", repository.root)
        log.info(
            "sessions kept in %s: %d taken back, next id %d",
            store_path,
            len(self.service.sessions),
            self.service.sessions.next_id,
        )

    def close(self) -> None:
        self.store.close()

    def _serve_metrics(self, conf: Any) -> None:
        """Serve the Prometheus metrics on their own listener, when a port is set."""
        port = int(getattr(conf, "netserv_metrics_port", 0) or 0)
        if not port:
            return
        host = getattr(conf, "netserv_metrics_host", None) or "127.0.0.1"
        collector = ControllerCollector(
            self.service, self.signaling, self.switches.counts, self.service.clock
        )
        try:
            server = hub.WSGIServer((host, port), wsgi_app(collector))
        except OSError as exc:
            why = f"netserv controller: cannot serve metrics on {host}:{port}: {exc}"
            raise SystemExit(why) from None
        hub.spawn(server.serve_forever)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def _want_reload(self, signum: int, frame: object) -> None:
        self._reload_wanted = True  # read in the tick loop: no file I/O in a signal handler

    def _reload_policy(self) -> None:
        """Read the policy file again; a bad file is logged and the old policy stays."""
        self._reload_wanted = False
        source = self.service.policy.source
        try:
            self.service.policy = load_policy(source)
        except PolicyError as exc:
            log.error("%s; the policy in use stays", exc)
        else:
            log.info("policy reloaded from %s", source)

    def _tick_loop(self) -> None:
        while True:
            hub.sleep(TICK)
            if self._reload_wanted:
                self._reload_policy()
            try:
                self.service.tick()
            except Exception:  # keep expiring: one bad session must not stop the others
                log.exception("housekeeping failed")
            gcpolicy.apply(self._heap.step(len(self.service.sessions), time.monotonic()))

    def _challenge_loop(self) -> None:
        while True:
            hub.sleep(CHALLENGE_TICK)
            try:
                self._send_all(self.signaling.tick())
            except Exception:  # keep checking: a held request must still be answered
                log.exception("return-routability checks failed")

    def _send_all(self, sends: list[Send]) -> None:
        by_switch: dict[int, list[Message]] = {}
        for dpid, msg in sends:
            by_switch.setdefault(dpid, []).append(msg)
        for dpid, msgs in by_switch.items():
            try:
                self._send(dpid, msgs)
            except Unavailable as exc:  # gone meanwhile: the requester retransmits
                log.warning("signaling: %s", exc)

    def _probe_loop(self) -> None:
        while True:
            try:
                now = self.service.clock()
                self.service.network.expire_links(now)
                self._send_each(self.service.network.relearn())
                self._send_each(self.service.network.probes(now))
            except Exception:  # keep probing: links must keep being confirmed
                log.exception("link discovery failed")
            hub.sleep(PROBE_INTERVAL)

    def _send_each(self, probes: dict[int, list[Message]]) -> None:
        """Send each switch its messages, without waiting; skip switches gone meanwhile."""
        for dpid, msgs in probes.items():
            try:
                self._send(dpid, msgs)
            except Unavailable:  # gone meanwhile: its links go when it is seen gone
                pass

    def _send(self, dpid: int, msgs: list[Message]) -> None:
        if msgs:
            self.switches.send(dpid, msgs, wait=False)

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        self.switches.datapaths[dp.id] = dp
        self.service.switch_connected(dp.id)
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))  # then `_sync`
        log.info("switch %016x connected", dp.id)

    def _sync(self, dpid: int) -> None:
        """Read a (re)connected switch's NetServ flows and send it only what differs.

        A green thread: the flow-stats reply arrives through the event loop.
        """
        try:
            present = self.switches.request(dpid, pipeline.present_request())
        except NetServError as exc:
            log.warning("switch %016x: cannot read its flows: %s", dpid, exc)
            present = None
        try:
            self.switches.send(dpid, self.service.reconcile(dpid, present))
        except NetServError as exc:  # it reconnects, and is reconciled again then
            log.warning("switch %016x: reconciling its flows failed: %s", dpid, exc)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def switch_gone(self, ev: Any) -> None:
        dp = ev.datapath
        if dp.id is not None and self.switches.datapaths.get(dp.id) is dp:
            del self.switches.datapaths[dp.id]
            self.service.network.switch_disconnected(dp.id)
            self._send_each(self.service.network.relearn())
            log.warning("switch %016x disconnected", dp.id)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_desc(self, ev: Any) -> None:
        dpid = ev.msg.datapath.id
        ports = {p.port_no: p.name.decode() for p in ev.msg.body if p.port_no < 0xFFFFFF00}
        self._send(dpid, self.service.ports_replaced(dpid, ports))
        if self.service.sync_due(dpid):  # the agent's port is known now
            hub.spawn(self._sync, dpid)
        # Every switch probes now, so both directions of the new switch's links are known.
        self._send_each(self.service.network.probes(self.service.clock()))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev: Any) -> None:
        msg, dpid = ev.msg, ev.msg.datapath.id
        ofp = msg.datapath.ofproto
        if msg.reason == ofp.OFPPR_DELETE:
            self._send(dpid, self.service.ports_changed(dpid, {}, {msg.desc.port_no}))
        else:
            self._send(
                dpid,
                self.service.ports_changed(dpid, {msg.desc.port_no: msg.desc.name.decode()}, set()),
            )
        self._send_each(self.service.network.relearn())  # a port gone may take a tree link

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev: Any) -> None:
        msg = ev.msg
        data = bytes(msg.data)
        if len(data) < 14:
            return
        dpid, in_port, now = msg.datapath.id, msg.match["in_port"], self.service.clock()
        packet_ins = self.switches.counts.packet_ins
        if msg.cookie == DISCOVERY_COOKIE:
            packet_ins[(dpid, "discovery")] += 1
            self.service.network.probe_in(dpid, in_port, data, now)
            self._send_each(self.service.network.relearn())  # a new link may change the tree
            return
        if msg.cookie == SIGNALING_COOKIE:  # it may install sessions: off the event loop
            packet_ins[(dpid, "signaling")] += 1
            hub.spawn(self._signaled, dpid, in_port, data)
            return
        packet_ins[(dpid, "forwarding")] += 1
        msgs = self.service.network.packet_in(
            dpid, msg.table_id, in_port, _mac(data[6:12]), _mac(data[0:6]), data, now
        )
        self._send(dpid, msgs)

    def _signaled(self, dpid: int, in_port: int, frame: bytes) -> None:
        try:
            self._send_all(self.signaling.packet_in(dpid, in_port, frame))
        except Exception:  # the next request must still be answered
            log.exception("signaling punted by switch %016x: handling failed", dpid)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev: Any) -> None:
        self.switches.barrier_reply(ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flow_stats_reply(self, ev: Any) -> None:
        msg = ev.msg
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        self.switches.stats_reply(msg.datapath.id, msg.xid, flow_stats(msg.body), more)

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def port_stats_reply(self, ev: Any) -> None:
        msg = ev.msg
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        self.switches.stats_reply(msg.datapath.id, msg.xid, port_stats(msg.body), more)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error(self, ev: Any) -> None:
        msg = ev.msg
        text = f"OpenFlow error type {msg.type} code {msg.code}"
        log.warning("switch %016x: %s (xid %d)", msg.datapath.id, text, msg.xid)
        self.switches.error(msg.datapath.id, msg.xid, text)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def flow_removed(self, ev: Any) -> None:
        msg = ev.msg
        if msg.reason == msg.datapath.ofproto.OFPRR_HARD_TIMEOUT:
            session_id = tables.session_of_cookie(msg.cookie)
            hub.spawn(self.service.flow_removed, msg.datapath.id, session_id)
