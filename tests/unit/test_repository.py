"""The module repository and where a session's module comes from: publishing checks
everything and a refusal changes nothing; versions are chosen as docs/modules.md says."""

from __future__ import annotations

import pytest

from controller.errors import Conflict, NotFound, PolicyError
from controller.modules import ModuleSource
from controller.policy import ModuleTrust, load_policy
from controller.repository import BadBundle, Repository, UntrustedBundle
from nodes.archive import digest, pack
from nodes.bundle import SHIPPED_MODULES, BundleError, Catalog
from nodes.signing import read_private_key, sign, write_key_pair
from tests.bundles import module_folder


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository(tmp_path / "repo")


def bundle(tmp_path, version="1.0.0", name="tally", **change) -> bytes:
    return pack(module_folder(tmp_path / f"src-{name}-{version}", name, version, **change))


def state(repo: Repository) -> list[str]:
    """Return every path under the repository: what a refusal must leave as it was."""
    return sorted(str(p.relative_to(repo.root)) for p in repo.root.rglob("*"))


def test_publishing_keeps_several_versions_newest_first(tmp_path, repo):
    for version in ("1.9.0", "1.10.0", "1.2"):
        entry, new = repo.publish(bundle(tmp_path, version), None, ModuleTrust())
        assert new and entry.version == version
    assert repo.names() == ["tally"]
    assert repo.versions("tally") == ["1.10.0", "1.9.0", "1.2"]  # as numbers, not text
    entry = repo.get("tally", "1.9.0")
    assert entry.sha256 == digest(bundle(tmp_path, "1.9.0")) and entry.signature is None
    assert repo.bundle(entry) == bundle(tmp_path, "1.9.0")


def test_the_same_bundle_again_changes_nothing_and_another_one_is_a_conflict(tmp_path, repo):
    first, _ = repo.publish(bundle(tmp_path), None, ModuleTrust())
    before = state(repo)
    again, new = repo.publish(bundle(tmp_path), None, ModuleTrust())
    assert not new and again == first
    other = bundle(tmp_path / "x", code="class Tally: pass\n")
    with pytest.raises(Conflict, match="published already, with another bundle"):
        repo.publish(other, None, ModuleTrust())
    assert state(repo) == before


@pytest.mark.parametrize(
    "change, error, words",
    [
        ({"code": "def broken(:\n"}, BadBundle, "module.py line 1: syntax error"),
        ({"manifest": "surprise = true\n"}, BadBundle, "unknown key"),
        ({"code": "class Other: pass\n"}, BadBundle, "defines no Tally"),
    ],
)
def test_a_bad_bundle_is_refused_and_nothing_is_left(tmp_path, repo, change, error, words):
    repo.publish(bundle(tmp_path, "0.9.0"), None, ModuleTrust())
    before = state(repo)
    with pytest.raises(error, match=words) as caught:
        repo.publish(bundle(tmp_path, **change), None, ModuleTrust())
    assert str(repo.root) not in str(caught.value)  # the author's paths, not ours
    assert state(repo) == before
    with pytest.raises(BadBundle, match="not a bundle"):
        repo.publish(b"junk" * 300, None, ModuleTrust())
    assert state(repo) == before


def test_signatures_are_checked_before_anything_is_read(tmp_path, repo):
    write_key_pair(tmp_path / "alice.key")
    write_key_pair(tmp_path / "mallory.key")
    alice = read_private_key(tmp_path / "alice.key")
    mallory = read_private_key(tmp_path / "mallory.key")
    alice_pub = (tmp_path / "alice.key.pub").read_text().strip()
    strict = ModuleTrust((alice_pub,), allow_unsigned=False)
    data = bundle(tmp_path)
    tampered = data.replace(b"self.frames += 1", b"self.frames += 2")
    assert tampered != data
    with pytest.raises(UntrustedBundle, match="unsigned"):
        repo.publish(data, None, strict)
    with pytest.raises(UntrustedBundle, match="not among the policy's trusted_publishers"):
        repo.publish(data, sign(mallory, digest(data)), strict)
    with pytest.raises(UntrustedBundle, match="bad signature"):
        repo.publish(tampered, sign(alice, digest(data)), strict)
    assert state(repo) == []
    entry, _ = repo.publish(data, sign(alice, digest(data)), strict)
    assert entry.signature is not None and entry.signature.key == alice_pub
    assert entry.to_json(strict)["trusted"] is True and entry.to_json(ModuleTrust())["signer"]


def test_removing_a_version_leaves_the_others(tmp_path, repo):
    for version in ("1.0.0", "2.0.0"):
        repo.publish(bundle(tmp_path, version), None, ModuleTrust())
    removed = repo.remove("tally", "1.0.0")
    assert removed.version == "1.0.0" and repo.versions("tally") == ["2.0.0"]
    with pytest.raises(NotFound):
        repo.remove("tally", "1.0.0")
    repo.remove("tally", "2.0.0")
    assert repo.names() == [] and state(repo) == []


def test_a_bundle_changed_on_disk_is_refused_when_a_session_wants_it(tmp_path, repo):
    write_key_pair(tmp_path / "alice.key")
    alice = read_private_key(tmp_path / "alice.key")
    alice_pub = (tmp_path / "alice.key.pub").read_text().strip()
    trust = ModuleTrust((alice_pub,), allow_unsigned=False)
    data = bundle(tmp_path)
    repo.publish(data, sign(alice, digest(data)), trust)
    source = ModuleSource(Catalog([SHIPPED_MODULES]), repo, lambda: trust)
    assert source.resolve("tally").sha256 == digest(data)
    on_disk = repo.root / "tally" / "1.0.0" / "bundle.tar"
    on_disk.write_bytes(data.replace(b"frames += 1", b"frames += 9"))
    with pytest.raises(UntrustedBundle, match="bad signature"):
        source.resolve("tally")


def test_a_module_comes_from_the_operators_folders_then_the_repository_then_services(
    tmp_path, repo
):
    mine = tmp_path / "mine"
    module_folder(mine, "tally", "0.5.0")
    for version in ("1.0.0", "2.0.0"):
        repo.publish(bundle(tmp_path, version), None, ModuleTrust())
    repo.publish(bundle(tmp_path, "7.0.0", name="counter"), None, ModuleTrust())
    source = ModuleSource(Catalog([mine, SHIPPED_MODULES]), repo)
    chosen = source.resolve("tally")
    assert (chosen.manifest.version, chosen.sha256) == ("0.5.0", "")  # the operator's own
    chosen = source.resolve("tally", "1.0.0")
    assert chosen.sha256 == repo.get("tally", "1.0.0").sha256
    assert source.resolve("counter").manifest.version == "7.0.0"  # published over shipped
    assert source.resolve("counter", "1.0.0").manifest.path.parent == SHIPPED_MODULES
    assert source.resolve("null").manifest.path.parent == SHIPPED_MODULES
    with pytest.raises(BundleError, match="no version '3.0.0'; there are 0.5.0 .*, 2.0.0 "):
        source.resolve("tally", "3.0.0")
    with pytest.raises(BundleError, match="unknown module 'nope'; available: .*'counter'.*'tally'"):
        source.resolve("nope")
    listing = source.listing()
    tally = [(m["version"], m["source"], m["default"]) for m in listing["modules"]]
    tally = [row for row, m in zip(tally, listing["modules"], strict=True) if m["name"] == "tally"]
    assert tally == [
        ("0.5.0", "path", True),
        ("2.0.0", "repository", False),
        ("1.0.0", "repository", False),
    ]
    counters = [m for m in listing["modules"] if m["name"] == "counter"]
    assert [(m["version"], m["default"]) for m in counters] == [("7.0.0", True), ("1.0.0", False)]


def test_without_a_version_a_request_gets_the_newest_published(tmp_path, repo):
    source = ModuleSource(Catalog([SHIPPED_MODULES]), repo)
    for version in ("1.0.0", "1.1.0"):
        repo.publish(bundle(tmp_path, version), None, ModuleTrust())
        assert source.resolve("tally").manifest.version == version


def test_a_reloaded_policy_counts_at_the_next_look_up(tmp_path, repo):
    trust = [ModuleTrust()]
    source = ModuleSource(Catalog([SHIPPED_MODULES]), repo, lambda: trust[0])
    repo.publish(bundle(tmp_path), None, trust[0])
    source.resolve("tally")
    trust[0] = ModuleTrust(allow_unsigned=False)
    with pytest.raises(UntrustedBundle, match="unsigned"):
        source.resolve("tally")
    assert source.resolve("counter").manifest.name == "counter"  # folders need no signature


def test_the_policys_modules_table(tmp_path):
    write_key_pair(tmp_path / "alice.key")
    alice_pub = (tmp_path / "alice.key.pub").read_text().strip()
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[modules]\ntrusted_publishers = ["{alice_pub}", "file:alice.key.pub"]\n'
        "allow_unsigned = false\n"
    )
    policy = load_policy(path)
    assert policy.modules == ModuleTrust((alice_pub,), allow_unsigned=False)
    assert policy.to_json()["modules"] == {
        "trusted_publishers": [alice_pub],
        "allow_unsigned": False,
    }
    path.write_text("[operator]\n")
    assert load_policy(path).modules == ModuleTrust()  # unsigned bundles load, as before
    for text, words in [
        ("[modules]\nallow_unsigned = 1\n", "must be true or false"),
        ("[modules]\ntrusted_publishers = ['rsa:x']\n", "public key is written ed25519:"),
        ("[modules]\ntrusted_publishers = ['file:nope.pub']\n", "cannot read nope.pub"),
        ("[modules]\nsigned = true\n", "unknown key"),
    ]:
        path.write_text(text)
        with pytest.raises(PolicyError, match=words):
            load_policy(path)
