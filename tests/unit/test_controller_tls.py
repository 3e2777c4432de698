"""`netserv controller`'s TLS options: refused unless whole, passed to Ryu on the OpenFlow port."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controller import entry


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    entry.add_arguments(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ("--ctl-privkey", "k.pem"),
        ("--ctl-cert", "c.pem"),
        ("--ca-certs", "ca.pem"),
        ("--ctl-cert", "c.pem", "--ca-certs", "ca.pem"),
    ],
)
def test_incomplete_tls_options_are_refused_before_anything_starts(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = []
    monkeypatch.setattr(entry, "run_controller", lambda *a, **k: started.append(a) or 0)
    assert entry.run(parse("--store", ":memory:", *argv)) == 1
    assert "TLS needs --ctl-privkey and --ctl-cert together" in capsys.readouterr().err
    assert started == []


def test_a_missing_tls_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entry, "run_controller", lambda *a, **k: 0)
    key = tmp_path / "k.pem"
    key.write_text("")
    args = parse("--ctl-privkey", str(key), "--ctl-cert", str(tmp_path / "c.pem"))
    assert entry.run(args) == 1
    assert f"no such TLS file: {tmp_path / 'c.pem'}" in capsys.readouterr().err


def test_tls_listens_on_the_openflow_port() -> None:
    assert entry._tls_args(None, None, None, 6653) == ()
    assert entry._tls_args("k.pem", "c.pem", "ca.pem", 16653) == (
        "--ctl-privkey", "k.pem", "--ctl-cert", "c.pem",
        "--ofp-ssl-listen-port", "16653", "--ca-certs", "ca.pem",
    )  # fmt: skip
