"""Every shell and Python example in README.md and docs/*.md runs and does what the text says.

Which blocks run, and how, is `tests/docblocks.py`; each document runs in order, in
network and mount namespaces of its own (`tests/integration/docrun.py`), with its own
Open vSwitch, so the docs' fixed names (h1, s1, ports 8080 and 6653) clash with no
other test and the repository and HOME see none of the files the examples write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.docblocks import DocError, documents, read
from tests.integration.docrun import INSIDE

REPO = Path(__file__).resolve().parents[2]
DOC_TIMEOUT = 170.0  # the README runs `./netserv demo`, about a minute


def _run(doc: Path, scratch: Path) -> dict[str, Any]:
    """Run `doc`'s examples in new namespaces; return the runner's report.

    Afterwards no process may be left in those namespaces: any found is killed (by
    its pid) and named in the report's `stray` list.
    """
    report = scratch / "report.json"
    argv = ["unshare", "--mount", "--net", "--propagation", "private", "--"]
    argv += [sys.executable, "-m", "tests.integration.docrun", str(doc), str(report), str(scratch)]
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(DOC_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the runner's cleanup still runs
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    data = json.loads(report.read_text()) if report.exists() else {"error": "no report"}
    if proc.returncode != 0 and not data.get("error"):
        data["error"] = f"the runner exited {proc.returncode} (timeout {DOC_TIMEOUT:g} s?)"
    data["stray"] = _kill_strays(data.get("netns"), data.get("mntns"))
    return data


def _kill_strays(netns: int | None, mntns: int | None) -> list[str]:
    """Kill processes still in the runner's namespaces; return their pids and commands."""
    stray = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            inodes = {os.stat(f"/proc/{pid}/ns/{ns}").st_ino for ns in ("net", "mnt")}
            if inodes & {netns, mntns}:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                os.kill(int(pid), signal.SIGKILL)
                stray.append(f"{pid}: {cmd.strip()}")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone, or not ours to inspect (so not started by the run)
    if stray:
        time.sleep(0.5)
    return stray


def _explain(record: dict[str, Any], report: dict[str, Any]) -> str:
    text = f"{record['where']} ({record['lang']}) {record['status']}"
    if record["status"] == "running":
        text += f" when the run was stopped:\n{report.get('error')}"
    for key in ("problem", "returncode", "stdout", "stderr"):
        if record.get(key) not in (None, ""):
            value = str(record[key])
            text += f"\n--- {key}:\n{value[-4000:]}"
    return text


@pytest.mark.skipif(INSIDE in os.environ, reason="this is a docs run's own test suite")
@pytest.mark.parametrize("doc", documents(REPO), ids=lambda p: str(p.relative_to(REPO)))
def test_examples_run_as_the_document_says(doc: Path, tmp_path: Path) -> None:
    try:
        blocks = read(REPO, doc)
    except DocError as exc:
        blocks, broken = [], str(exc)
    else:
        broken = ""
    assert not broken, broken
    if not any(b.runnable and not b.skipped for b in blocks):
        return  # nothing to run: its blocks are all shown, which read() has checked
    report = _run(doc, tmp_path)
    records = report["blocks"]
    failed = [r for r in records if r["status"] in ("failed", "running")]
    assert not failed, _explain(failed[0], report) + f"\n(logs in {tmp_path})"
    assert not report.get("error"), f"{report['error']}\n(logs in {tmp_path})"
    assert [r["where"] for r in records] == [b.where for b in blocks], "not every block was reached"
    # No silent skips: a block is skipped exactly when its annotation says so.
    skipped = [r["where"] for r in records if r["status"] == "skipped"]
    assert skipped == [b.where for b in blocks if b.skipped]
    ran = {"ran", "started", "saved"}
    assert [r["where"] for r in records if r["status"] in ran] == [
        b.where for b in blocks if b.runnable and not b.skipped
    ]
    assert report["leftovers"] == [], "the examples left these behind in their namespace"
    assert report["stray"] == [], "processes outlived the run (killed now)"
