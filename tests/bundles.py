"""Module folders and bundles made for tests: a counting module at any version."""

from __future__ import annotations

from pathlib import Path

CODE = """from nodes.module_api import ServiceModule, Verdict

VERSION = "{version}"


class Tally(ServiceModule):
    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.frames = 0

    def process(self, frame):
        self.frames += 1
        return Verdict.FORWARD

    def stats(self):
        return {{"frames": self.frames, "version": VERSION}}
"""


def module_folder(
    root: Path,
    name: str = "tally",
    version: str = "1.0.0",
    code: str | None = None,
    manifest: str = "",
) -> Path:
    """Write module `name` at `version` into root/name (replacing what was there); return
    the folder. `code` replaces module.py, `manifest` is added to manifest.toml."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.toml").write_text(
        f'name = "{name}"\nversion = "{version}"\nsummary = "counts frames"\n'
        # Trusted where the node trusts it by name (unit tests run no worker processes);
        # isolated on a node that does not.
        f'entry = "module:Tally"\ntier = "trusted"\n{manifest}'
    )
    (folder / "module.py").write_text(code if code is not None else CODE.format(version=version))
    return folder


# A module whose count is its state: each version hands it over (`export_state`) and
# takes it in (`import_state`); `{take}` is import_state's body.
KEEPER = (
    CODE
    + """
    def export_state(self):
        return {{"frames": self.frames}}

    def import_state(self, state):
        {take}
"""
)
TAKES = "self.frames = state['frames']"
REFUSES = "raise ValueError('cannot read the state of ' + repr(state))"


def keeper(version: str, take: str = TAKES) -> str:
    """Return the code of the state-keeping tally at `version`; `take` is its import_state."""
    return KEEPER.format(version=version, take=take)
