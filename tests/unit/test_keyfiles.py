"""The secrets folder: private, made once, never half-written, never world-readable."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from controller import keyfiles
from controller.keyfiles import SecretsError
from jsonhttp.client import ClientError
from signaling.client import NetServClient, read_token


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_folder_and_its_secrets_are_made_private(tmp_path):
    folder = tmp_path / "run" / "secrets"
    token = keyfiles.operator_token(folder, create=True)
    assert len(token) == 64 and int(token, 16) >= 0
    assert mode(folder) == 0o700 and mode(folder / "nodes") == 0o700
    assert mode(folder / "rest.token") == 0o600
    assert (folder / "rest.token").read_text() == token + "\n"
    assert keyfiles.operator_token(folder, create=True) == token  # made once
    assert keyfiles.operator_token(folder) == token
    path = keyfiles.provision_node_key(folder, 0x1A)
    assert path == folder / "nodes" / "000000000000001a.key" and mode(path) == 0o600
    key = keyfiles.node_key(folder, 0x1A)
    assert key is not None and len(key) == 32 and key.hex() != token
    assert (
        keyfiles.provision_node_key(folder, 0x1A) == path and keyfiles.node_key(folder, 26) == key
    )
    assert keyfiles.node_key(folder, 2) is None and keyfiles.NodeKeys(folder)(2) is None
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # nothing aside


def test_the_folder_comes_from_the_argument_the_environment_or_the_repository(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(keyfiles.ENV, raising=False)
    assert keyfiles.secrets_dir() == keyfiles.DEFAULT
    assert keyfiles.DEFAULT == Path(__file__).resolve().parents[2] / "run" / "secrets"
    monkeypatch.setenv(keyfiles.ENV, str(tmp_path / "env"))
    assert keyfiles.secrets_dir() == tmp_path / "env"
    assert keyfiles.secrets_dir(tmp_path / "arg") == tmp_path / "arg"


def test_without_create_a_missing_token_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        keyfiles.operator_token(tmp_path)


@pytest.mark.parametrize("where", ["folder", "nodes", "token", "key"])
@pytest.mark.parametrize("loose", [0o750, 0o705, 0o777])
def test_a_secret_others_may_reach_is_refused_not_repaired(tmp_path, where, loose):
    folder = tmp_path / "secrets"
    keyfiles.operator_token(folder, create=True)
    keyfiles.provision_node_key(folder, 1)
    path = {
        "folder": folder,
        "nodes": folder / "nodes",
        "token": folder / "rest.token",
        "key": folder / "nodes" / "0000000000000001.key",
    }[where]
    os.chmod(path, loose if where in ("folder", "nodes") else loose & 0o666)
    with pytest.raises(SecretsError, match="open to other users"):
        if where == "token":
            keyfiles.operator_token(folder)
        elif where == "key":
            keyfiles.node_key(folder, 1)
        else:
            keyfiles.operator_token(folder, create=True)
    assert mode(path) == (loose if where in ("folder", "nodes") else loose & 0o666)


def test_a_link_or_a_short_secret_is_refused(tmp_path):
    folder = keyfiles.prepare(tmp_path / "secrets")
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_text("ab" * 32 + "\n")
    os.chmod(elsewhere, 0o600)
    (folder / "nodes" / "0000000000000001.key").symlink_to(elsewhere)
    with pytest.raises(SecretsError, match="cannot read"):
        keyfiles.node_key(folder, 1)
    short = folder / "nodes" / "0000000000000002.key"
    short.write_text("ab" * 15 + "\n")
    os.chmod(short, 0o600)
    with pytest.raises(SecretsError, match="holds no secret"):
        keyfiles.node_key(folder, 2)
    assert keyfiles.NodeKeys(folder)(2) is None  # the controller logs it and takes no call


def test_a_folder_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)  # nobody's: what it holds is not ours to trust
    with pytest.raises(SecretsError, match="belongs to uid 65534"):
        keyfiles.prepare(folder)


def test_processes_that_make_the_token_at_once_all_get_the_same(tmp_path):
    folder = tmp_path / "secrets"
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(keyfiles.operator_token(folder, create=True)))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 16 and len(set(got)) == 1


def test_the_client_reads_the_operators_token_where_it_may(tmp_path, monkeypatch):
    folder = tmp_path / "secrets"
    monkeypatch.setenv(keyfiles.ENV, str(folder))
    assert read_token() is None and NetServClient().token is None  # no folder yet: anonymous
    token = keyfiles.operator_token(folder, create=True)
    assert read_token() == token and NetServClient().token == token
    assert NetServClient(token="given").token == "given"
    mine = tmp_path / "mine.token"
    mine.write_text("abc\n")
    assert NetServClient(token_file=mine).token == "abc"
    with pytest.raises(ClientError, match="cannot read the token file"):
        NetServClient(token_file=tmp_path / "missing")
    mine.write_text("\n")
    with pytest.raises(ClientError, match="holds no token"):
        NetServClient(token_file=mine)


def test_node_keys_follow_the_file(tmp_path):
    folder = tmp_path / "secrets"
    path = keyfiles.provision_node_key(folder, 7)
    keys = keyfiles.NodeKeys(folder)
    first = keys(7)
    assert first == keyfiles.node_key(folder, 7) and keys(7) == first
    path.write_text("cd" * 32 + "\n")  # changed in place, same size
    assert keys(7) == bytes.fromhex("cd" * 32)
    os.chmod(path, 0o644)  # readable by others: no longer a key to use
    assert keys(7) is None
    os.chmod(path, 0o600)
    assert keys(7) == bytes.fromhex("cd" * 32)
    path.unlink()
    assert keys(7) is None
