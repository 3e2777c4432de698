"""BENCHMARKS.md holds one `## ` section per benchmark; each benchmark rewrites its own."""

from __future__ import annotations

from pathlib import Path


def update_section(document: str, section: str) -> str:
    """Return Markdown `document` with the `## ` section whose heading line starts
    `section` replaced by `section`, or `section` appended when there is none.

    A section runs from its `## ` heading to the next `## ` heading or the end;
    everything else is kept as it was.
    """
    heading = section.split("\n", 1)[0]
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    body = section.rstrip("\n") + "\n"
    if start is None:
        return document.rstrip("\n") + "\n\n" + body if document.strip() else body
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + body + ("\n" + tail if tail else "")


def write_section(path: Path, section: str, title: str = "# Benchmarks") -> None:
    """Replace (or add) `section` in the Markdown file at `path`, keeping the rest;
    a missing file is made with `title` first."""
    document = path.read_text() if path.exists() else title + "\n"
    path.write_text(update_section(document, section))
