"""Run a node agent process: `netserv agent ...` ends up here."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from nodes.control import make_server
from nodes.packet_io import PacketSocket

log = logging.getLogger("netserv.agent")


def run_agent(config: AgentConfig, services: Path, listen: tuple[str, int]) -> int:
    """Run the agent until SIGTERM/SIGINT or until one of its loops dies; return an exit code."""
    agent = NodeAgent(config, Catalog(services))
    try:
        io = PacketSocket(config.iface)
    except OSError as exc:
        log.error("cannot open a packet socket on %s: %s", config.iface, exc)
        return 1
    try:
        server = make_server(agent, *listen)
    except OSError as exc:
        log.error("cannot listen on %s:%d for the control API: %s", *listen, exc)
        io.close()
        return 1
    host, port = server.server_address[:2]
    agent.url = f"http://{host}:{port}"
    died: list[str] = []

    def guarded(name: str, target: Callable[..., object], *args: object) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except BaseException:
                log.exception("%s died", name)
                died.append(name)
                agent.stopping.set()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopping.set())
    guarded("control", server.serve_forever)
    packets = guarded("packets", agent.packet_loop, io)
    guarded("housekeeping", agent.housekeeping_loop)
    log.info(
        "agent for %016x on %s (switch port %s), control API %s",
        config.dpid,
        config.iface,
        config.switch_port,
        agent.url,
    )
    while not agent.stopping.wait(1.0):
        pass
    server.shutdown()
    packets.join(timeout=2)
    for session_id in [c.session_id for c in agent.dispatcher.chains()]:
        agent.detach(session_id)
    io.close()
    if died:
        log.error("stopped because %s died", ", ".join(died))
        return 1
    log.info("stopped")
    return 0
