"""The contract's part in bundles: an attach names a module's version and its bundle's
SHA-256, and the agent's status names a bundle it loaded by NAME@SHA256."""

from __future__ import annotations

import json

import pytest

from agentproto.fields import ContractError
from agentproto.messages import AgentStatus, Attach, LoadedModule, ModuleSpec, NodeIO

SHA = "ab" * 32
IO = NodeIO(1, 2, 3, 4, 5, 6, 7, None)


def test_a_module_from_the_repository_crosses_the_wire_with_its_version_and_hash():
    spec = ModuleSpec("tally", (("small", 5),), "1.2.0", SHA)
    attach = Attach(7, 5, 30, (spec, ModuleSpec("null", (), "1.0.0"), ModuleSpec("counter")))
    body = json.loads(json.dumps(attach.to_json()))
    assert body["modules"] == [
        {"name": "tally", "params": {"small": 5}, "version": "1.2.0", "sha256": SHA},
        {"name": "null", "params": {}, "version": "1.0.0"},
        {"name": "counter", "params": {}},
    ]
    assert Attach.from_json(body, 7) == attach


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"name": "tally", "version": "1.x"}, "version of tally"),
        ({"name": "tally", "version": 1}, "version of tally must be a string"),
        ({"name": "tally", "version": "1.0", "sha256": "AB" * 32}, "sha256 of tally"),
        ({"name": "tally", "version": "1.0", "sha256": "ab"}, "sha256 of tally"),
        ({"name": "tally", "sha256": SHA}, "needs its version"),
        ({"name": "tally", "signature": "x"}, "has no field"),
    ],
)
def test_a_bad_version_or_hash_is_refused(raw, words):
    with pytest.raises(ContractError, match=words):
        ModuleSpec.from_json(raw)


def test_the_agents_status_names_a_loaded_bundle_by_name_and_hash():
    loaded = {"null": LoadedModule("1.0.0", 1), f"tally@{SHA}": LoadedModule("1.2.0", 2)}
    status = AgentStatus(1, "s1-na", "s1-ns", "b", 42, True, loaded, (7,), IO)
    assert AgentStatus.from_json(json.loads(json.dumps(status.to_json()))) == status
    for bad in ("tally@", "tally@xyz", f"Tally@{SHA}", f"tally@{SHA}@{SHA}"):
        with pytest.raises(ContractError, match="module name"):
            AgentStatus(1, "s1-na", "s1-ns", "b", 42, True, {bad: LoadedModule("1", 1)}, (), IO)
