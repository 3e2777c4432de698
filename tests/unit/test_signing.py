"""Publisher signatures: good ones verify, a changed bundle or another key's does not, and
the policy's trust decides what an unsigned or untrusted bundle may do."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest

from controller.policy import ModuleTrust
from controller.repository import UntrustedBundle, admit
from nodes.archive import digest, pack
from nodes.signing import (
    Signature,
    SignatureError,
    public_key,
    read_private_key,
    read_public_key,
    sign,
    verify,
    write_key_pair,
)
from tests.bundles import module_folder


@pytest.fixture
def keys(tmp_path):
    """Return two publishers' (private key, public key line)."""
    out = []
    for name in ("alice", "mallory"):
        line = write_key_pair(tmp_path / f"{name}.key")
        out.append((read_private_key(tmp_path / f"{name}.key"), line))
    return out


@pytest.fixture
def bundle(tmp_path):
    return pack(module_folder(tmp_path / "src"))


def test_a_signature_verifies_for_its_bundle_only(keys, bundle):
    (alice, alice_pub), _ = keys
    signature = sign(alice, digest(bundle))
    assert signature.key == alice_pub
    verify(signature, digest(bundle))
    tampered = bundle[:600] + bytes([bundle[600] ^ 1]) + bundle[601:]
    with pytest.raises(SignatureError, match="changed after it was signed"):
        verify(signature, digest(tampered))


def test_a_signature_made_with_another_key_than_it_names_does_not_verify(keys, bundle):
    (alice, alice_pub), (mallory, _) = keys
    forged = dataclasses.replace(sign(mallory, digest(bundle)), key=alice_pub)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(forged, digest(bundle))
    # a signature lifted onto another hash does not verify either
    lifted = dataclasses.replace(sign(alice, digest(bundle)), sha256="0" * 64)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(lifted, "0" * 64)


def test_signatures_travel_as_json_and_malformed_ones_are_refused(keys, bundle):
    (alice, _), _ = keys
    signature = sign(alice, digest(bundle))
    assert Signature.from_json(signature.to_json()) == signature
    bad = [
        None,
        {},
        signature.to_json() | {"extra": 1},
        signature.to_json() | {"sha256": "XYZ"},
        signature.to_json() | {"key": "rsa:AAAA"},
        signature.to_json() | {"key": "ed25519:AAAA"},
        signature.to_json() | {"signature": "not base64!"},
        signature.to_json() | {"signature": "AAAA"},
    ]
    for raw in bad:
        with pytest.raises(SignatureError):
            Signature.from_json(raw)


def test_key_files_are_private_and_never_overwritten(tmp_path):
    line = write_key_pair(tmp_path / "k")
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert read_public_key(tmp_path / "k.pub") == line
    public_key(line)
    with pytest.raises(FileExistsError):
        write_key_pair(tmp_path / "k")
    os.chmod(tmp_path / "k", 0o640)
    with pytest.raises(SignatureError, match="chmod 600"):
        read_private_key(tmp_path / "k")
    (tmp_path / "junk").write_text("not a key")
    os.chmod(tmp_path / "junk", 0o600)
    with pytest.raises(SignatureError, match="not an unencrypted PEM"):
        read_private_key(tmp_path / "junk")


def test_trust_lets_in_what_the_policy_says(keys, bundle):
    (alice, alice_pub), (mallory, _) = keys
    sha = digest(bundle)
    by_alice, by_mallory = sign(alice, sha), sign(mallory, sha)
    strict = ModuleTrust(trusted_publishers=(alice_pub,), allow_unsigned=False)
    open_ = ModuleTrust(trusted_publishers=(alice_pub,), allow_unsigned=True)
    admit(strict, sha, by_alice)
    admit(open_, sha, by_alice)
    admit(open_, sha, None)
    admit(open_, sha, by_mallory)  # unsigned ones may load: an unknown key adds nothing
    admit(ModuleTrust(), sha, None)  # no policy file: today's behaviour
    with pytest.raises(UntrustedBundle, match="unsigned"):
        admit(strict, sha, None)
    with pytest.raises(UntrustedBundle, match="not among the policy's trusted_publishers"):
        admit(strict, sha, by_mallory)


@pytest.mark.parametrize("allow_unsigned", [True, False])
def test_a_bad_signature_is_refused_whatever_the_policy(keys, bundle, allow_unsigned):
    (alice, alice_pub), _ = keys
    trust = ModuleTrust(trusted_publishers=(alice_pub,), allow_unsigned=allow_unsigned)
    other = digest(bundle + b"\0")
    with pytest.raises(UntrustedBundle, match="bad signature"):
        admit(trust, other, sign(alice, digest(bundle)))
