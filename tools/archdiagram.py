"""Draw NetServ's architecture (docs/architecture.svg) from the code itself.

    .venv/bin/python -m tools.archdiagram            # rewrites docs/architecture.svg
    .venv/bin/python -m tools.archdiagram --check    # exit 1 when the file is stale

The processes and the channels between them are declared here; what goes inside them
is read from the repository: each process's package and the first-party packages it
imports (found by parsing every file's imports), the switch's tables
(`controller.tables.TABLES`), the shipped service modules (the folders of `services/`),
and the ports and periods of the channels (`signaling.wire.SIGNALING_PORT`,
`agentproto.limits.HEARTBEAT`, the controller's default ports). The SVG is written
directly, with fixed coordinates and no timestamp, so the same code gives the same
bytes; `tests/unit/test_archdiagram.py` checks that the committed file is current.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from agentproto.limits import HEARTBEAT
from controller.tables import TABLES
from signaling.wire import SIGNALING_PORT

REPO = Path(__file__).resolve().parent.parent
SVG = REPO / "docs" / "architecture.svg"
FIRST_PARTY = ("agentproto", "controller", "jsonhttp", "nodes", "signaling")
OF_PORT, REST_PORT = 6653, 8080  # `netserv controller`'s defaults (controller/entry.py)
WIDTH, HEIGHT = 990, 550
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


@dataclass(frozen=True)
class Part:
    """A box: a process or a piece of the network, with the lines written inside it."""

    key: str
    title: str
    lines: tuple[str, ...]
    x: int
    y: int
    w: int
    h: int
    fill: str


@dataclass(frozen=True)
class Channel:
    """An arrow between two parts: `points` from the first to the last, `label` beside
    its middle segment; `both` draws a head at each end."""

    points: tuple[tuple[int, int], ...]
    label: tuple[str, ...]
    both: bool = False
    dashed: bool = False
    below: bool = False  # a horizontal arrow's label under the line, not over it


def package_imports(package: str, root: Path = REPO) -> list[str]:
    """Return the other first-party packages that `package`'s files import, sorted."""
    found = set()
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update(n.split(".")[0] for n in names)
    return sorted(found & set(FIRST_PARTY) - {package})


def shipped_services(root: Path = REPO) -> list[str]:
    """Return the names of the service modules shipped in services/, sorted."""
    return sorted(p.name for p in (root / "services").iterdir() if (p / "manifest.toml").exists())


def _wrap(words: list[str], width: int) -> list[str]:
    """Return `words` joined by ", " into lines of at most `width` characters."""
    lines, line = [], ""
    for word in words:
        candidate = f"{line}, {word}" if line else word
        if line and len(candidate) > width:
            lines.append(line + ",")
            line = word
        else:
            line = candidate
    return [*lines, line] if line else lines


def parts(root: Path = REPO) -> list[Part]:
    """Return the boxes of the diagram, their contents read from the code under `root`."""

    def uses(package: str, width: int = 36) -> list[str]:
        found = [f"{p}/" for p in package_imports(package, root)]
        return _wrap([f"uses {found[0]}", *found[1:]] if found else [], width)

    tables = ", ".join(f"t{n} {name}" for name, n in sorted(TABLES.items(), key=lambda t: t[1]))
    return [
        Part("requester", "requester", ("netserv session, NetServClient", "(signaling/)",
             *uses("signaling")), 20, 20, 260, 110, "#fff7e0"),
        Part("controller", "netserv controller (Ryu, OpenFlow 1.3)",
             ("controller/: REST, sessions, placement,", "pipeline, topology, signaling, store",
              *uses("controller")), 360, 20, 330, 120, "#e8f0ff"),
        Part("switch", "Open vSwitch bridge (per node)", (tables, "detour = a session's match",
             "→ push its tag, out to the agent"), 360, 250, 300, 100, "#eef8ee"),
        Part("agent", "node agent + supervisor", ("nodes/: packet I/O, dispatcher,",
             "module host, sandbox, control API", *uses("nodes", 30)),
             740, 230, 230, 130, "#e8f0ff"),
        Part("modules", "service modules", (*_wrap(shipped_services(root), 30),
             "from services/, the module path", "or the controller's repository"),
             740, 430, 230, 100, "#f6eefc"),
        Part("hosts", "users' hosts", ("the flows to serve",), 20, 265, 200, 70, "#f4f4f4"),
        Part("remote", "NetServ node on another host", ("bridge + agent, same controller",),
             360, 460, 300, 60, "#f4f4f4"),
    ]  # fmt: skip


def channels() -> list[Channel]:
    """Return the arrows between the parts, with the ports and periods the code uses."""
    return [
        Channel(((510, 140), (510, 250)), (f"OpenFlow 1.3, TCP or TLS :{OF_PORT}",
                "flows, packet-in/out, LLDP probes"), both=True),
        Channel(((280, 60), (360, 60)), (f"REST :{REST_PORT}", "bearer token")),
        Channel(((150, 130), (150, 200), (420, 200), (420, 250)),
                (f"on-path signaling, UDP {SIGNALING_PORT}",), dashed=True),
        Channel(((780, 230), (780, 110), (690, 110)), ("register, heartbeat",
                f"every {HEARTBEAT:g} s (signed)")),
        Channel(((690, 80), (930, 80), (930, 230)), ("control API: attach,",
                "refresh, detach, stats (signed)")),
        Channel(((660, 300), (740, 300)), ("veth:", "tagged", "frames"), both=True, below=True),
        Channel(((850, 360), (850, 430)), ("frames in batches",), both=True),
        Channel(((220, 300), (360, 300)), ("user traffic",), both=True),
        Channel(((510, 350), (510, 460)), ("VXLAN tunnel", "(docs/multihost.md)"), both=True),
    ]  # fmt: skip


def _text(x: int, y: int, text: str, size: int = 12, weight: str = "normal") -> str:
    return (
        f"<text x='{x}' y='{y}' font-size='{size}' font-weight='{weight}' {FONT}>"
        f"{escape(text)}</text>"
    )


def _box(part: Part) -> list[str]:
    out = [
        f"<g id='{part.key}'>",
        f"<rect x='{part.x}' y='{part.y}' width='{part.w}' height='{part.h}' rx='8' "
        f"fill='{part.fill}' stroke='#445' stroke-width='1.2'/>",
        _text(part.x + 10, part.y + 20, part.title, 13, "bold"),
    ]
    out += [_text(part.x + 10, part.y + 40 + 16 * i, line) for i, line in enumerate(part.lines)]
    return [*out, "</g>"]


def _arrow(channel: Channel) -> list[str]:
    points = " ".join(f"{x},{y}" for x, y in channel.points)
    start = " marker-start='url(#head)'" if channel.both else ""
    dash = " stroke-dasharray='6,4'" if channel.dashed else ""
    out = [
        f"<polyline points='{points}' fill='none' stroke='#334' stroke-width='1.4'"
        f"{start} marker-end='url(#head)'{dash}/>"
    ]
    middle = len(channel.points) // 2
    (x1, y1), (x2, y2) = channel.points[middle - 1], channel.points[middle]
    x, y = (x1 + x2) // 2 + 6, (y1 + y2) // 2 - 4 * len(channel.label) + 4
    if y1 == y2:  # horizontal: the label above the line, centred
        x = (x1 + x2) // 2 - 3 * max(map(len, channel.label))
        y = y1 + 16 if channel.below else y1 - 6 - 14 * (len(channel.label) - 1)
    out += [_text(x, y + 14 * i, line, 11) for i, line in enumerate(channel.label)]
    return out


def render(root: Path = REPO) -> str:
    """Return the diagram as SVG text."""
    out = [
        "<?xml version='1.0' encoding='UTF-8'?>",
        "<!-- Generated by tools/archdiagram.py from the code; do not edit by hand. -->",
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}'>",
        "<defs><marker id='head' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='8' "
        "markerHeight='8' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
        "fill='#334'/></marker></defs>",
        f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
    ]
    for part in parts(root):
        out += _box(part)
    for channel in channels():
        out += _arrow(channel)
    return "\n".join([*out, "</svg>", ""])


def main(argv: list[str] | None = None) -> int:
    """Write docs/architecture.svg (or, with --check, compare it); return the exit code."""
    p = argparse.ArgumentParser(prog="python -m tools.archdiagram", description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 when the file is not current")
    p.add_argument("--out", type=Path, default=SVG, help="where to write (%(default)s)")
    args = p.parse_args(argv)
    svg = render()
    if args.check:
        current = args.out.exists() and args.out.read_text() == svg
        if not current:
            print(f"{args.out} is stale: run python -m tools.archdiagram", file=sys.stderr)
        return 0 if current else 1
    args.out.write_text(svg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
