"""The fenced blocks of NetServ's Markdown docs, and what the docs test does with each.

Pure: text in, frozen `Block`s out; no process is started here. A document's blocks
run in their order, one after the other, from the repository's root, in one
environment per document (`tests/integration/docrun.py`). The rules, by the fence's
language tag:

- `sh`, `bash`: shell commands, run by bash with `-e -o pipefail` (every command must
  succeed). A block whose every command line ends in ` &` is long-running (a controller,
  an agent): each line is started in the background, the next block waits until the
  controller on 127.0.0.1:8080 answers and the setting's nodes are ready, and they are
  stopped when the setting changes or the document ends. Mixing such lines with others
  in one block is an error.
- `console`: `$ `-prompted commands, run like `sh`; the other lines are their output,
  which must appear in what the commands print.
- `python`: a script, run with the project's Python.
- untagged, `text`, `toml`, `json`: shown for reading (output, listings, diagrams,
  bodies), never run.
- any other tag is an error, so that a new kind of block cannot be skipped silently.

A comment `# prints TEXT` at the end of a line of a run block claims that TEXT (to the
end of the line, or only the part in backticks when it starts with one) appears in the
block's output; the test checks it.

Annotations are one-line HTML comments right before a block (only blank lines between);
each says why, after a colon, for the reader of the Markdown source:

- `<!-- not run by tests: WHY -->`: the block is not run (the only way to skip one).
- `<!-- saved by tests as FILE: WHY -->`: the block is written to FILE, not run; a later
  block runs it (as the text tells the reader to).
- `<!-- output checked by tests: WHY -->`: a shown block that is the output of the last
  block run before it; each of its lines must appear, in order, with `...` for any text.
- `<!-- tests set up SETTING: WHY -->`: from this block on, the document runs beside
  SETTING (names joined by `+`, see `SETTINGS`) instead of the previous one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUN_LANGS = {"sh": "sh", "bash": "sh", "console": "console", "python": "python"}
SHOWN_LANGS = frozenset({"", "text", "toml", "json"})

#: What a document can be run beside; `tests/integration/docrun.py` builds them.
SETTINGS = {
    "nothing": "only the namespace's own Open vSwitch (the state before any setting)",
    "controller": "`netserv controller` on its default ports: REST 127.0.0.1:8080, "
    "OpenFlow 127.0.0.1:6653",
    "bridge": "hosts h1, h2, h3 (network namespaces by those names, for `ip netns exec`) on "
    "bridge s1 (datapath id 1), a NetServ node with its veth pair s1-ns/s1-na but no agent, "
    "its switch pointed at 127.0.0.1:6653",
    "node": "the same, with the node's agent started by the topology (needs controller)",
}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<body>.*?)\s*-->\s*$")
_NOTES = (
    ("skip", re.compile(r"not run by tests:\s*(?P<why>.+)")),
    ("file", re.compile(r"saved by tests as (?P<arg>[\w./-]+):\s*(?P<why>.+)")),
    ("output", re.compile(r"output checked by tests:\s*(?P<why>.+)")),
    ("setting", re.compile(r"tests set up (?P<arg>[\w+]+):\s*(?P<why>.+)")),
)
_BACKGROUND = re.compile(r"^(?P<cmd>.*[^&\s])\s+&\s*(?:#.*)?$")
_PRINTS = re.compile(r"#\s*prints\s+(?:`(?P<quoted>[^`]+)`.*|(?P<text>.+?)\s*)$")
_PROMPT = "$ "


class DocError(ValueError):
    """A document breaks the rules above; the message says where."""


@dataclass(frozen=True)
class Note:
    """An annotation: `kind` is skip, file, output or setting; `arg` its file or setting."""

    kind: str
    arg: str
    why: str
    line: int


@dataclass(frozen=True)
class Block:
    """A fenced block: where it starts, its language tag, its text and its annotations."""

    path: str
    line: int
    lang: str
    text: str
    notes: tuple[Note, ...] = ()

    @property
    def where(self) -> str:
        """Return `path:line` of the opening fence."""
        return f"{self.path}:{self.line}"

    @property
    def runnable(self) -> bool:
        """Return True for a block of commands or code (whether or not it is skipped)."""
        return self.lang in RUN_LANGS

    @property
    def kind(self) -> str:
        """Return sh, console, python or shown."""
        return RUN_LANGS.get(self.lang, "shown")

    def note(self, kind: str) -> Note | None:
        """Return this block's annotation of `kind`, or None."""
        return next((n for n in self.notes if n.kind == kind), None)

    @property
    def skipped(self) -> bool:
        """Return True when an annotation says the block is not run."""
        return self.note("skip") is not None

    @property
    def saved_as(self) -> str | None:
        """Return the file the block is saved as instead of being run, or None."""
        note = self.note("file")
        return note.arg if note else None

    @property
    def setting(self) -> tuple[str, ...] | None:
        """Return the setting this block starts (names in order), or None to keep the last."""
        note = self.note("setting")
        return tuple(note.arg.split("+")) if note else None

    def background_commands(self) -> list[str]:
        """Return the commands of a long-running block (without ` &`), or [] for any other."""
        if self.kind != "sh":
            return []
        lines = [ln for ln in self.text.splitlines() if ln.strip() and not _comment(ln)]
        matches = [_BACKGROUND.match(ln) for ln in lines]
        if not any(matches):
            return []
        if not all(matches):
            raise DocError(
                f"{self.where}: a block mixes commands ending in ` &` (started in the "
                "background) with others; give the long-running ones a block of their own"
            )
        return [m.group("cmd").strip() for m in matches if m]

    def script(self) -> str:
        """Return what is run: the text, or for a console block its commands alone."""
        if self.kind != "console":
            return self.text
        return "".join(line + "\n" for line in _console(self.text)[0])

    def claims(self) -> list[str]:
        """Return the texts the block claims its run prints: `# prints TEXT` comments, and
        the output lines of a console block."""
        found = [
            m.group("quoted") or m.group("text")
            for ln in self.text.splitlines()
            if (m := _PRINTS.search(ln))
        ]
        if self.kind == "console":
            found += [ln.strip() for ln in _console(self.text)[1] if ln.strip()]
        return found


def _console(text: str) -> tuple[list[str], list[str]]:
    """Split a console block into its commands (prompt removed) and its output lines."""
    commands: list[str] = []
    output: list[str] = []
    continued = False
    for line in text.splitlines():
        if line.startswith(_PROMPT) or continued:
            command = line.removeprefix(_PROMPT) if not continued else line
            commands.append(command)
            continued = command.endswith("\\")
        else:
            output.append(line)
    return commands, output


def _comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def parse(text: str, path: str) -> list[Block]:
    """Return every fenced block of the Markdown `text` (from file `path`), in order.

    Raise DocError for an unknown language tag, an unclosed fence, an annotation that
    is malformed, not right before a block or not fitting the block, or a long-running
    block that also holds other commands.
    """
    blocks: list[Block] = []
    notes: list[Note] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        comment, fence = _COMMENT.match(line), _FENCE.match(line)
        if comment and "tests" in comment.group("body"):
            notes.append(_note(comment.group("body"), f"{path}:{number}", number))
        elif fence:
            end = _closing(lines, i, fence)
            if end is None:
                raise DocError(f"{path}:{number}: the fence opened here is never closed")
            indent = len(fence.group("indent"))
            body = "".join(_dedent(ln, indent) + "\n" for ln in lines[i + 1 : end])
            block = Block(path, number, fence.group("info").split(" ")[0].lower(), body)
            blocks.append(_annotated(block, tuple(notes)))
            notes, i = [], end
        elif line.strip() and notes:
            raise DocError(f"{path}:{notes[0].line}: an annotation must be right before a block")
        i += 1
    if notes:
        raise DocError(f"{path}:{notes[0].line}: an annotation must be right before a block")
    return blocks


def _note(body: str, where: str, line: int) -> Note:
    for kind, pattern in _NOTES:
        m = pattern.fullmatch(body)
        if m:
            return Note(kind, m.groupdict().get("arg") or "", m.group("why"), line)
    raise DocError(f"{where}: an HTML comment speaks of tests but is no annotation: {body!r}")


def _closing(lines: list[str], start: int, opening: re.Match[str]) -> int | None:
    fence = opening.group("fence")
    for j in range(start + 1, len(lines)):
        stripped = lines[j].strip()
        if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            return j
    return None


def _dedent(line: str, indent: int) -> str:
    cut = len(line) - len(line.lstrip(" \t"))
    return line[min(cut, indent) :]


def _annotated(block: Block, notes: tuple[Note, ...]) -> Block:
    if block.lang not in RUN_LANGS and block.lang not in SHOWN_LANGS:
        raise DocError(
            f"{block.where}: language tag {block.lang!r} is neither run "
            f"({', '.join(sorted(RUN_LANGS))}) nor shown ({', '.join(sorted(SHOWN_LANGS))})"
        )
    kinds = [n.kind for n in notes]
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            raise DocError(f"{block.where}: two `{kind}` annotations for one block")
    for note in notes:
        where = f"{block.path}:{note.line}"
        if note.kind in ("skip", "file") and not block.runnable:
            raise DocError(f"{where}: only a block that would run can be skipped or saved")
        if note.kind == "output" and block.runnable:
            raise DocError(f"{where}: an output block must be a shown block, not a run one")
        if note.kind == "setting":
            names = note.arg.split("+")
            unknown = [s for s in names if s not in SETTINGS]
            if unknown:
                raise DocError(f"{where}: unknown setting(s) {unknown}; known: {list(SETTINGS)}")
            if "node" in names and "controller" not in names:
                raise DocError(f"{where}: the setting `node` needs `controller` (its agent does)")
    if "skip" in kinds and "file" in kinds:
        raise DocError(f"{block.where}: a block is either skipped or saved, not both")
    block = Block(block.path, block.line, block.lang, block.text, notes)
    block.background_commands()  # raises for a block that mixes them
    return block


def output_lines(block: Block) -> list[str]:
    """Return the non-blank lines of an output block, stripped."""
    return [ln.strip() for ln in block.text.splitlines() if ln.strip()]


def missing_lines(expected: list[str], output: str) -> list[str]:
    """Return the lines of `expected` that do not appear, in order, among `output`'s lines.

    Lines are compared stripped; `...` in an expected line stands for any text.
    """
    got = [ln.strip() for ln in output.splitlines()]
    missing, at = [], 0
    for line in expected:
        pattern = re.compile(".*".join(re.escape(part) for part in line.split("...")))
        hit = next((j for j in range(at, len(got)) if pattern.fullmatch(got[j])), None)
        if hit is None:
            missing.append(line)
        else:
            at = hit + 1
    return missing


def documents(repo: Path) -> list[Path]:
    """Return the documents whose examples are run: README.md, then docs/*.md by name."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def read(repo: Path, doc: Path) -> list[Block]:
    """Return the blocks of `doc`, named by its path relative to `repo`."""
    return parse(doc.read_text(encoding="utf-8"), str(doc.relative_to(repo)))
