"""NetServ nodes on two hosts, joined by VXLAN, under one controller reached over TLS.

Each "host" is a network namespace with an Open vSwitch of its own (ovsdb-server and
ovs-vswitchd with their own run, database and log folders, started and stopped here by
their pids), as docs/multihost.md sets one up: an underlay bridge `phy` holding the
underlay link and the host's tunnel address, and the NetServ bridge `br` with a VXLAN
port to the other host, a port for a user's machine and the node agent's veth. The
controller runs in the test's namespace and listens on the address of a management
link to host A, which host B reaches through a route, as a remote host would; the
switches connect to it over TLS (`ssl:`) with certificates made here, the agents over
TCP. Traffic flows between the users' machines h1 (behind host A) and h2 (behind B).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signaling.client import NetServClient
from tools.procs import REPO, python_env
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, stop_process, wait_ready

DISCOVERY_TIMEOUT = 15.0
AGENT_STOP_TIMEOUT = 5.0  # as topologies give an agent (topo/node.py)
UNDERLAY_MTU = 1600  # room for VXLAN's 50 bytes around a 1500-byte frame
DPIDS = {"a": 0xA1, "b": 0xB2}


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run a command; return its stdout; raise with its stderr when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def in_ns(ns: str, *argv: str) -> str:
    return sh("ip", "netns", "exec", ns, *argv)


@dataclass
class NsHost:
    """A user's machine in a namespace, as `tools.scenario` drives Mininet's hosts."""

    name: str  # the namespace
    ip: str
    mac: str

    def IP(self) -> str:  # noqa: N802 (Mininet's names)
        return self.ip

    def MAC(self) -> str:  # noqa: N802
        return self.mac

    def defaultIntf(self) -> Any:  # noqa: N802
        return type("Intf", (), {"name": "eth0"})()

    def cmd(self, command: str) -> str:
        return sh("ip", "netns", "exec", self.name, "sh", "-c", command, check=False)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)


class Stack:
    """What the fixture made, undone in reverse order even when a step fails."""

    def __init__(self) -> None:
        self.undo: list[tuple[str, Any]] = []

    def close(self) -> None:
        errors = []
        while self.undo:
            what, action = self.undo.pop()
            try:
                action()
            except Exception as exc:
                errors.append(f"{what}: {exc}")
        assert not errors, f"clean-up failed: {errors}"


def make_certs(folder: Path) -> dict[str, Path]:
    """Make a CA and a certificate signed by it for the controller and for the switches."""
    folder.mkdir()
    files = {"ca": folder / "ca.pem", "ca_key": folder / "ca.key"}
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", str(files["ca_key"]), "-out", str(files["ca"]), "-days", "1",
       "-subj", "/CN=NetServ test CA")  # fmt: skip
    for who in ("controller", "switch"):
        key, csr, cert = (folder / f"{who}.{ext}" for ext in ("key", "csr", "pem"))
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", str(key), "-out", str(csr), "-subj", f"/CN=netserv {who}")  # fmt: skip
        sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey",
           str(files["ca_key"]), "-CAcreateserial", "-out", str(cert), "-days", "1")  # fmt: skip
        files[f"{who}_key"], files[f"{who}_cert"] = key, cert
    return files


class TlsController(ControllerProcess):
    """`netserv controller` listening on `host` only, OpenFlow over TLS."""

    def __init__(self, host: str, certs: dict[str, Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host, self.certs = host, certs
        self.url = f"http://{host}:{self.rest_port}"

    @property
    def of_addr(self) -> tuple[str, int]:
        return self.host, self.of_port

    def argv(self) -> list[str]:
        return super().argv() + [
            "--of-host", self.host, "--rest-host", self.host,
            "--ctl-privkey", str(self.certs["controller_key"]),
            "--ctl-cert", str(self.certs["controller_cert"]),
            "--ca-certs", str(self.certs["ca"]),
        ]  # fmt: skip


def start_ovs(stack: Stack, ns: str, folder: Path) -> dict[str, str]:
    """Start an ovsdb-server and ovs-vswitchd in `ns` with folders of their own under
    `folder`; return the environment in which ovs-vsctl and ovs-appctl talk to them."""
    dirs = {k: folder / k.lower() for k in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR")}
    dirs["OVS_SYSCONFDIR"] = folder / "etc"
    for path in dirs.values():
        path.mkdir(parents=True)
    env = dict(os.environ, **{k: str(v) for k, v in dirs.items()})
    db, sock = dirs["OVS_DBDIR"] / "conf.db", dirs["OVS_RUNDIR"] / "db.sock"
    sh("ovsdb-tool", "create", str(db), "/usr/share/openvswitch/vswitch.ovsschema")
    for daemon, arg, ready in (
        ("ovsdb-server", f"--remote=punix:{sock}", ["ovs-vsctl", "--timeout=1", "show"]),
        ("ovs-vswitchd", f"unix:{sock}", ["ovs-appctl", "--timeout=1", "version"]),
    ):
        log = dirs["OVS_LOGDIR"] / f"{daemon}.log"
        argv = ["ip", "netns", "exec", ns, daemon, *([str(db)] if daemon == "ovsdb-server" else [])]
        argv += [arg, "--pidfile", "-vconsole:off", f"--log-file={log}"]
        # `ip netns exec` execs the daemon, so this pid is the daemon's own.
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, cwd="/")
        stack.undo.append((f"{daemon} in {ns}", lambda p=proc: stop_process(p)))
        deadline = time.monotonic() + 10
        while subprocess.run(ready, env=env, capture_output=True).returncode != 0:
            assert proc.poll() is None, f"{daemon} exited; see {log}"
            assert time.monotonic() < deadline, f"{daemon} does not answer; see {log}"
            time.sleep(0.05)
        if daemon == "ovsdb-server":
            sh("ovs-vsctl", "--no-wait", "init", env=env)
    return env


def quiet_veth(ns: str, *names: str) -> None:
    """Bring veth ends up with TX checksum offload off, as the userspace datapath needs."""
    for name in names:
        in_ns(ns, "ethtool", "-K", name, "tx", "off")
        in_ns(ns, "ip", "link", "set", name, "up")


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("multihost")
    p = "m" + secrets.token_hex(2)[:3]
    net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"  # the /30s of the links
    ns = {k: f"{p}{k}" for k in ("a", "b", "h1", "h2")}
    stack = Stack()
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            stack.undo.append((f"namespace {name}", lambda n=name: sh("ip", "netns", "delete", n)))
            in_ns(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                  "net.ipv6.conf.default.disable_ipv6=1")  # fmt: skip
            in_ns(name, "ip", "link", "set", "lo", "up")
        # Management links from the controller's namespace (this one) to each host.
        mgmt = {"a": (f"{net}.1", f"{net}.2"), "b": (f"{net}.5", f"{net}.6")}
        for k, (here, there) in mgmt.items():
            link = f"{p}m{k}"
            sh("ip", "link", "add", link, "type", "veth", "peer", "name", "mgmt", "netns", ns[k])
            stack.undo.append((f"link {link}", lambda n=link: sh("ip", "link", "del", n)))
            sh("ip", "addr", "add", f"{here}/30", "dev", link)
            sh("ip", "link", "set", link, "up")
            in_ns(ns[k], "ip", "addr", "add", f"{there}/30", "dev", "mgmt")
            in_ns(ns[k], "ip", "link", "set", "mgmt", "up")
        ctl_host = mgmt["a"][0]
        in_ns(ns["b"], "ip", "route", "add", f"{ctl_host}/32", "via", mgmt["b"][0])

        certs = make_certs(tmp / "pki")
        ctl = TlsController(ctl_host, certs, logfile=tmp / "controller.log", secrets=tmp / "s")
        ctl.start()
        stack.undo.append(("controller", lambda: ctl.__exit__(None, None, None)))

        # The underlay between the two hosts.
        sh("ip", "link", "add", "under", "netns", ns["a"], "mtu", str(UNDERLAY_MTU), "type",
           "veth", "peer", "name", "under", "netns", ns["b"], "mtu", str(UNDERLAY_MTU))  # fmt: skip
        tunnel_ip = {"a": f"{net}.9", "b": f"{net}.10"}  # a /30 of its own
        users = {"a": NsHost(ns["h1"], "10.0.0.1", "00:00:00:00:00:01"),
                 "b": NsHost(ns["h2"], "10.0.0.2", "00:00:00:00:00:02")}  # fmt: skip
        envs = {}
        for k, other in (("a", "b"), ("b", "a")):
            env = envs[k] = start_ovs(stack, ns[k], tmp / f"ovs-{k}")
            vsctl = ["ovs-vsctl", "--timeout=10"]
            quiet_veth(ns[k], "under")
            sh(*vsctl, "add-br", "phy", "--", "set", "bridge", "phy", "datapath_type=netdev",
               "fail_mode=standalone", "--", "add-port", "phy", "under", env=env)  # fmt: skip
            sh(*vsctl, "set", "interface", "phy", f"mtu_request={UNDERLAY_MTU}", env=env)
            in_ns(ns[k], "ip", "addr", "add", f"{tunnel_ip[k]}/30", "dev", "phy")
            in_ns(ns[k], "ip", "link", "set", "phy", "up")
            sh(*vsctl, "set-ssl", str(certs["switch_key"]), str(certs["switch_cert"]),
               str(certs["ca"]), env=env)  # fmt: skip
            sh(*vsctl, "add-br", "br", "--", "set", "bridge", "br", "datapath_type=netdev",
               "protocols=OpenFlow13", "fail_mode=secure",
               f"other-config:datapath-id={DPIDS[k]:016x}", "--",
               "add-port", "br", "vx", "--", "set", "interface", "vx", "type=vxlan",
               f"options:remote_ip={tunnel_ip[other]}", env=env)  # fmt: skip
            user = users[k]
            sh("ip", "link", "add", "user", "netns", ns[k], "type", "veth", "peer", "name", "eth0",
               "netns", user.name, "address", user.mac)  # fmt: skip
            quiet_veth(ns[k], "user")
            quiet_veth(user.name, "eth0")
            in_ns(user.name, "ip", "addr", "add", f"{user.ip}/8", "dev", "eth0")
            in_ns(
                ns[k], "ip", "link", "add", "agent-ns", "type", "veth", "peer", "name", "agent-na"
            )
            quiet_veth(ns[k], "agent-ns", "agent-na")
            sh(*vsctl, "add-port", "br", "user", "--", "add-port", "br", "agent-ns", env=env)
            host, port = ctl.of_addr
            sh(*vsctl, "set-controller", "br", f"ssl:{host}:{port}", env=env)
            log = open(tmp / f"agent-{k}.log", "wb")  # noqa: SIM115 (closed by the undo)
            agent = subprocess.Popen(
                ["ip", "netns", "exec", ns[k], sys.executable, "-m", "nodes",
                 "--dpid", f"{DPIDS[k]:x}", "--iface", "agent-na", "--switch-port", "agent-ns",
                 "--controller", ctl.url, "--listen", f"{mgmt[k][1]}:0",
                 "--secrets", str(ctl.secrets)],
                cwd=REPO, env=python_env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            stack.undo.append((f"agent {k}", lambda a=agent, f=log: (_stop_group(a), f.close())))
        client = ctl.client()
        wait_ready(client, [f"{d:016x}" for d in DPIDS.values()])
        yield {"ctl": ctl, "client": client, "users": users, "envs": envs, "certs": certs}
    finally:
        stack.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the agent's supervisor and its agent: the process group started for them,
    which gets the SIGTERM, as topologies stop it; each must stop by itself."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(AGENT_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"not stopped by SIGTERM within {AGENT_STOP_TIMEOUT} s") from None


def openflow_greeting(
    addr: tuple[str, int], ca: Path, cert: Path | None, key: Path | None
) -> bytes:
    """Return the first 8 bytes the controller sends a TLS client (b"" when it refuses
    the client), after checking the controller's certificate against `ca`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # OVS checks only the CA's signature, not a name
    ctx.load_verify_locations(ca)
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection(addr, timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            return tls.recv(8)
    except (ssl.SSLError, ConnectionError):
        return b""


def wait_for(what: str, check: Any, timeout: float = DISCOVERY_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.2)


def test_a_session_on_the_remote_node_serves_frames_that_crossed_the_tunnel(
    two_hosts: dict[str, Any],
) -> None:
    client: NetServClient = two_hosts["client"]
    h1, h2 = two_hosts["users"]["a"], two_hosts["users"]["b"]
    a, b = (f"{d:016x}" for d in DPIDS.values())
    warm_up((h1, h2), (h2, h1))

    # The tunnel is a link between the two switches, found by the controller's probes.
    def tunnel_link() -> bool:
        links = client._call("GET", "/netserv/topology")["links"]
        return {(x["src"]["dpid"], x["dst"]["dpid"]) for x in links} == {(a, b), (b, a)}

    wait_for("the link through the tunnel", tunnel_link)
    path = client._call("GET", f"/netserv/topology/path?src={h1.ip}&dst={h2.ip}")
    assert [hop["dpid"] for hop in path["path"]] == [a, b]

    # The last NetServ node on the way from h1 to h2 is host B's.
    session = client._call(
        "POST",
        "/netserv/sessions",
        {
            "match": {"ipv4_src": h1.ip, "ipv4_dst": h2.ip, "udp_dst": 9000},
            "module": "counter",
            "nodes": "last",
        },
    )
    assert session["node"] == b

    with Receiver(h2) as rx:
        assert send_udp(h1, h2, 9000, 150, rate=500) == 150
        assert send_udp(h1, h2, 9001, 100, rate=500) == 100
    assert rx.got(h1, 9000) == 150, rx.counts
    assert rx.got(h1, 9001) == 100, rx.counts

    stats = client.stats(session["id"])
    assert stats["stats"]["packets"] == 150, stats["stats"]  # only its flow, all of it
    detours = {
        k: sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br", "table=0", env=env)
        for k, env in two_hosts["envs"].items()
    }
    assert "tp_dst=9000" not in detours["a"], detours["a"]  # host A only forwards
    assert "tp_dst=9000" in detours["b"], detours["b"]
    assert client.teardown(session["id"])["state"] == "ended"

    # The switches are connected over TLS.
    for env in two_hosts["envs"].values():
        target = sh("ovs-vsctl", "get-controller", "br", env=env).strip()
        log = Path(env["OVS_LOGDIR"], "ovs-vswitchd.log").read_text()
        assert target.startswith("ssl:") and f"br<->{target}: connected" in log, target
    # Every connection gets the controller's certificate, and one without a certificate
    # the CA signed is refused.
    certs, addr = two_hosts["certs"], two_hosts["ctl"].of_addr
    hello = openflow_greeting(addr, certs["ca"], certs["switch_cert"], certs["switch_key"])
    assert len(hello) == 8 and hello[1] == 0, hello  # OFPT_HELLO
    assert openflow_greeting(addr, certs["ca"], None, None) == b""
