"""Isolated modules in real worker processes, driven by the agent's own host and dispatcher
(no switch needed): what confines them, what a hostile one can do, what it leaves behind."""

from __future__ import annotations

import logging
import os
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.bundle import Catalog
from nodes.dispatcher import Chain, Dispatcher
from nodes.host import ModuleHost, ModuleLoadError
from nodes.sandbox import landlock
from nodes.sandbox.cgroups import Layout
from nodes.sandbox.confine import SANDBOX_UID_BASE
from nodes.sandbox.policy import TierPolicy
from nodes.sandbox.proxy import LOG_BURST

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(landlock.abi_version() < 1, reason="needs Landlock")

HOSTILE = {
    "raiser": """
        def process(self, frame):
            raise ValueError("broken on purpose")
    """,
    "looper": """
        def process(self, frame):
            while True:
                pass
    """,
    "hog": """
        def process(self, frame):
            self.hoard = getattr(self, "hoard", [])
            self.hoard.append(bytearray(16 << 20))
            return Verdict.FORWARD
    """,
    "forker": """
        def process(self, frame):
            import os
            if os.fork() == 0:
                os._exit(0)
            return Verdict.FORWARD
    """,
    "opener": """
        def process(self, frame):
            import socket
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("10.9.9.9", 9))
            return Verdict.FORWARD
    """,
    "reader": """
        def process(self, frame):
            with open("/etc/shadow") as f:
                self.ctx.log.warning("read %r", f.read(20))
            return Verdict.FORWARD
    """,
}
# (state, what the reason says): every one is stopped, and says why
CONTAINED = {
    "raiser": "over its error budget",
    "looper": "hung: no answer within",
    "hog": "over its memory budget",
    "forker": "forbidden system call",
    "opener": "forbidden system call",
    "reader": "over its error budget",
}


def write_module(root: Path, name: str, body: str, manifest: str = "") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(f'name = "{name}"\nentry = "module:M"\n{manifest}')
    code = "from nodes.module_api import ServiceModule, Verdict\n\nclass M(ServiceModule):\n"
    (folder / "module.py").write_text(code + textwrap.indent(textwrap.dedent(body), "    "))


def workers(zombies: bool = True) -> list[int]:
    """Return the pids of processes of a sandbox uid (that still run, without `zombies`)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            field = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
            if int(field["Uid"].split()[0]) >= SANDBOX_UID_BASE:
                if zombies or not field["State"].startswith("Z"):
                    found.append(int(entry))
    return found


def worker_cgroups() -> set[Path]:
    mine = f"{os.getpid()}-"
    return {
        p
        for h in Layout.detect().by_controller.values()
        if (h.mount / "netserv").is_dir()
        for p in (h.mount / "netserv").iterdir()
        if p.name.startswith(mine)
    }


@pytest.fixture
def host(tmp_path: Path) -> ModuleHost:
    for name, body in HOSTILE.items():
        write_module(tmp_path, name, body)
    catalog = Catalog([tmp_path, REPO / "services"])
    host = ModuleHost(catalog, node=1, policy=TierPolicy.parse(["none"]))
    return host


@pytest.fixture
def d(host: ModuleHost) -> Iterator[Dispatcher]:
    """A dispatcher whose chains' modules are released at the end, even after a failure."""
    dispatcher = Dispatcher()
    try:
        yield dispatcher
    finally:
        release(host, dispatcher)


def chain_of(host: ModuleHost, d: Dispatcher, tag: int, names: list[str]) -> Chain:
    modules = [(name, host.instantiate(name, {}, tag)) for name in names]
    guards = [host.guard(m) for _, m in modules]
    copy = all(g.observe_only for g in guards)  # the mode the controller would install
    chain = Chain(tag, tag, modules, 1e9, 60, guards=guards, copy=copy)
    d.put(chain)
    return chain


def release(host: ModuleHost, d: Dispatcher) -> None:
    for chain in d.chains():
        d.remove(chain.session_id)
        for name, module in chain.modules:
            host.release(name, module)


def frame(i: int) -> memoryview:
    return memoryview(bytearray(i.to_bytes(4, "big") * 15))


def test_each_hostile_module_is_contained_and_a_neighbour_loses_nothing(host, d):
    counter = chain_of(host, d, 1, ["counter"])
    hostile = {name: chain_of(host, d, tag, [name]) for tag, name in enumerate(HOSTILE, 2)}
    sent = 0
    for _ in range(6):
        batch = []
        for tag in range(1, len(HOSTILE) + 2):
            batch += [(tag, frame(sent + i)) for i in range(8)]
        sent += 8
        out = d.run_batch(batch)
        assert out.forwarded == len(batch)  # fail open: every frame goes on, every time
    stats = counter.stats()
    assert stats["modules"][0]["stats"]["packets"] == stats["forwarded"] == sent
    assert stats["modules"][0]["state"] == "running" and stats["errors"] == 0
    for name, chain in hostile.items():
        entry = chain.stats()["modules"][0]
        assert entry["state"] == "quarantined", name
        assert CONTAINED[name] in entry["reason"], (name, entry["reason"])
    assert "PermissionError" in hostile["reader"].stats()["last_error"]
    assert len(workers(zombies=False)) == 1  # the counter's; every hostile one is stopped
    release(host, d)
    assert workers() == [] and worker_cgroups() == set()


def test_a_worker_runs_confined(host, d, tmp_path):
    write_module(
        tmp_path,
        "probe",
        """
        def stats(self):
            import os
            out = {"uid": os.getuid(), "groups": os.getgroups(), "cwd": os.getcwd()}
            for name, path in (("repo", REPO + "/README.md"), ("key", REPO + "/run/secrets")):
                try:
                    os.listdir(path) if name == "key" else open(path).close()
                    out[name] = "read"
                except OSError as exc:
                    out[name] = type(exc).__name__
            return out
        """.replace("REPO", repr(str(REPO))),
    )
    chain = chain_of(host, d, 1, ["probe"])
    module = chain.modules[0][1]
    (pid,) = workers()
    status = Path(f"/proc/{pid}/status").read_text()
    field = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    uid = SANDBOX_UID_BASE + pid
    assert field["Uid"].split() == [str(uid)] * 4 and field["Gid"].split() == [str(uid)] * 4
    assert field["NoNewPrivs"] == "1" and field["Seccomp"] == "2"
    assert int(field["CapBnd"], 16) & ~(1 << 2) == 0  # at most CAP_DAC_READ_SEARCH is left
    assert int(field["CapEff"], 16) & ~(1 << 2) == 0
    stats = module.stats()
    assert (stats["uid"], stats["groups"]) == (uid, [])
    assert stats["cwd"] == str(tmp_path / "probe")
    # The nodes package is readable, the rest of the repository (the node's secrets) not.
    assert (stats["repo"], stats["key"]) == ("PermissionError", "PermissionError")
    isolation = host.describe()["isolation"]
    assert isolation["landlock_abi"] >= 1
    for controller, where in isolation["cgroups"].items():  # found in /proc/self/mountinfo
        assert where == "none" or where.startswith(("v1 /", "v2 /")), controller
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert re.search(r"Max processes\s+1\s+1", limits)
    assert re.search(r"Max core file size\s+0\s+0", limits)
    for path in worker_cgroups():
        assert str(pid) in (path / "cgroup.procs").read_text().split()
        if (path / "pids.max").exists():
            assert (path / "pids.max").read_text().strip() == "1"
        if (path / "memory.limit_in_bytes").exists():
            assert int((path / "memory.limit_in_bytes").read_text()) == 64 << 20
    release(host, d)
    assert workers() == [] and worker_cgroups() == set()


def test_an_isolated_module_works_as_a_trusted_one(tmp_path):
    """Timers, emitted frames, rewrites, metrics and stop() reach across the channel."""
    body = """
        def __init__(self, params, ctx):
            super().__init__(params, ctx)
            self.ticks = ctx.counter("ticks")
            self.rewritten = ctx.counter("rewritten")
            ctx.every(0.05, self.tick)

        def tick(self):
            self.ticks.inc()
            self.ctx.emit(b"T" * 14)

        def process(self, frame):
            if frame[0] == 1:
                return Verdict.DROP
            frame[0] = 0xEE
            self.rewritten.inc()
            self.ctx.emit(b"E" * 14)
            return Verdict.MODIFIED
    """
    write_module(tmp_path / "mods", "both", body, 'tier = "trusted"\n')
    results = {}
    for tier, policy in (("trusted", ["both"]), ("isolated", ["none"])):
        host = ModuleHost(Catalog(tmp_path / "mods"), 1, policy=TierPolicy.parse(policy))
        d = Dispatcher()
        chain = chain_of(host, d, 1, ["both"])
        assert chain.stats()["modules"][0]["tier"] == tier
        batch = [(1, memoryview(bytearray([i]) * 20)) for i in range(3)]
        out = d.run_batch(batch)
        sent = [bytes(f) for f in out.frames]
        time.sleep(0.12)
        ticked = d.run_batch([])
        stats = chain.stats()
        results[tier] = (sent, len(ticked.frames) >= 1, stats["modules"][0]["stats"])
        release(host, d)
    assert results["isolated"][0] == results["trusted"][0]
    assert results["isolated"][0] == [
        b"\xee" + bytes(19),
        b"E" * 14,  # right after the frame it answers; frame 1 was dropped
        b"\xee" + bytes([2]) * 19,
        b"E" * 14,
    ]
    assert results["isolated"][1] and results["trusted"][1]
    assert results["isolated"][2]["rewritten"] == results["trusted"][2]["rewritten"] == 2


@pytest.mark.parametrize(
    "body, message",
    [
        ("def (:\n", "failed to load: SyntaxError"),
        ("x = 1\n", "is not a ServiceModule subclass"),
    ],
)
def test_a_module_that_cannot_start_is_refused_and_leaves_nothing(tmp_path, body, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "manifest.toml").write_text('name = "bad"\nentry = "module:M"\n')
    (folder / "module.py").write_text(body)
    host = ModuleHost(Catalog(tmp_path), 1, policy=TierPolicy.parse(["none"]))
    with pytest.raises(ModuleLoadError, match=message):
        host.instantiate("bad", {}, 1)
    assert host.loaded() == {} and workers() == [] and worker_cgroups() == set()


def test_a_setup_that_raises_is_refused(tmp_path):
    write_module(tmp_path, "grumpy", "def __init__(self, params, ctx):\n    raise OSError('no')\n")
    host = ModuleHost(Catalog(tmp_path), 1, policy=TierPolicy.parse(["none"]))
    with pytest.raises(ModuleLoadError, match="setup failed: OSError"):
        host.instantiate("grumpy", {}, 1)
    assert workers() == []


def test_capabilities_are_what_the_node_grants(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "table.txt").write_text("granted\n")
    body = f"""
        def stats(self):
            import socket
            out = {{"read": open({str(data / "table.txt")!r}).read().strip()}}
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.close()
            out["udp"] = True
            return out
    """
    caps = f'capabilities = ["net", "read:{data}"]\n'
    write_module(tmp_path / "mods", "netty", body, caps)
    catalog = Catalog(tmp_path / "mods")
    refused = ModuleHost(catalog, 1, policy=TierPolicy.parse(["none"], ["netty=net"]))
    with pytest.raises(ModuleLoadError, match=f"capability 'read:{data}'"):
        refused.instantiate("netty", {}, 1)
    grants = ["netty=net", f"netty=read:{data}"]
    host = ModuleHost(catalog, 1, policy=TierPolicy.parse(["none"], grants))
    module = host.instantiate("netty", {}, 1)
    assert module.stats() == {"read": "granted", "udp": True}
    host.release("netty", module)
    assert workers() == []


def test_a_module_that_floods_the_log_is_held_to_a_rate(host, d, tmp_path, caplog):
    body = """
        def process(self, frame):
            import logging
            for i in range(100):
                logging.getLogger("mine").error("line %d", i)  # past ctx.log's rate limit
            return Verdict.FORWARD
    """
    write_module(tmp_path, "flood", body)
    chain_of(host, d, 1, ["flood"])
    with caplog.at_level(logging.INFO, logger="netserv.module.flood.1"):
        for _ in range(20):
            d.run_batch([(1, frame(i)) for i in range(4)])
    lines = [r for r in caplog.records if r.name == "netserv.module.flood.1"]
    # 20 batches of 400 lines each: the worker sends at most 32 a batch, the agent logs
    # at most its burst and says what it left out.
    assert LOG_BURST <= len(lines) <= LOG_BURST + 5
    assert any("left out" in r.getMessage() for r in lines)


def test_an_isolated_observer_gets_copies_and_may_not_change_or_emit_them(host, d, tmp_path):
    body = """
        def process(self, frame):
            frame[0] = 0xFF
            self.ctx.emit(bytes(60))
            return Verdict.MODIFIED
    """
    write_module(tmp_path, "scribbler", body, manifest="observe_only = true\n")
    chain = chain_of(host, d, 1, ["scribbler", "monitor"])  # each in a worker of its own
    assert chain.copy and chain.batched
    batch = [(1, frame(i)) for i in range(2)]
    out = d.run_batch(batch)
    assert (len(out), out.copies) == (0, 2)  # nothing goes back
    assert [bytes(f) for _, f in batch] == [bytes(frame(i)) for i in range(2)]  # not rewritten
    stats = chain.stats()
    assert stats["modules"][1]["stats"]["packets"] == 2  # the monitor saw both copies
    assert (stats["errors"], stats["returned"], stats["emitted"]) == (4, 0, 0)  # MODIFIED, emit
    assert "observe-only, yet it" in stats["last_error"]
