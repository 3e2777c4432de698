"""The signaling policy file: requesters and their keys."""

import pytest

from controller.policy import Policy, PolicyError, load_policy
from signaling.auth import Key
from signaling.keyfile import write_key

A, B = Key(1, bytes(range(32))), Key(2, bytes(range(1, 33)))


def test_requesters_keys_come_from_their_key_files(tmp_path):
    write_key(tmp_path / "a.key", A)
    (tmp_path / "keys").mkdir()
    write_key(tmp_path / "keys" / "b.key", B)
    path = tmp_path / "policy.toml"
    path.write_text(
        '[requesters."alice@h1"]\nkey_files = ["a.key", "keys/b.key"]\n'
        '[requesters.bob]\nkey_files = ["a.key"]\n'
    )
    policy = load_policy(path)
    assert policy.key("alice@h1", 1) == A.secret and policy.key("alice@h1", 2) == B.secret
    assert policy.key("bob", 1) == A.secret and policy.key("bob", 2) is None
    assert policy.key("mallory", 1) is None


def test_no_policy_knows_no_requester():
    assert load_policy(None) == Policy() and Policy().key("alice", 1) is None


@pytest.mark.parametrize(
    "text, words",
    [
        ("requesters = 1", "table of requesters"),
        ("[other]", "unknown key"),
        ('[requesters."has space"]\nkey_files = ["a.key"]', "requester id"),
        ("[requesters.alice]", "give 'key_files'"),
        ('[requesters.alice]\nkey_files = ["a.key"]\nmodules = []', "give 'key_files'"),
        ('[requesters.alice]\nkey_files = ["missing.key"]', "missing.key"),
        ('[requesters.alice]\nkey_files = ["a.key", "a.key"]', "two keys have id 1"),
        ("[requesters", "policy"),
    ],
)
def test_a_bad_policy_says_what_is_wrong(tmp_path, text, words):
    write_key(tmp_path / "a.key", A)
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=words):
        load_policy(path)
