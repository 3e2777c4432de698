"""The module search path: folders given or in $NETSERV_MODULE_PATH, then services/."""

import os
from pathlib import Path

import pytest

from nodes.bundle import MODULE_PATH_ENV, SHIPPED_MODULES, BundleError, Catalog, module_path
from nodes.host import ModuleHost
from nodes.sandbox.policy import TierPolicy
from tests.unit.test_nodes import bundle

CODE = "from nodes.module_api import ServiceModule\nclass M(ServiceModule):\n    pass\n"


def manifest(name: str, version: str) -> str:
    return f'name = "{name}"\nversion = "{version}"\nentry = "module:M"\n'


def test_the_first_folder_holding_a_name_wins(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    bundle(first, "m", manifest("m", "1.0"), CODE)
    bundle(second, "m", manifest("m", "2.0"), CODE)
    bundle(second, "only_here", manifest("only_here", "3.0"), CODE)
    catalog = Catalog([first, second])
    assert catalog.get("m").version == "1.0" and catalog.get("m").path == first / "m"
    assert catalog.names() == ["m", "only_here"]
    good, bad = catalog.all()
    assert {m.name: m.version for m in good} == {"m": "1.0", "only_here": "3.0"} and bad == []


def test_a_module_in_a_later_folder_is_loaded_from_there(tmp_path):
    bundle(tmp_path / "mine", "m", manifest("m", "1.0") + 'tier = "trusted"\n', CODE)
    policy = TierPolicy.parse(["m"])
    host = ModuleHost(Catalog([SHIPPED_MODULES, tmp_path / "mine"]), node=1, policy=policy)
    host.instantiate("m", {}, session_id=1)
    assert set(host.loaded()) == {"m"}


def test_an_unknown_name_says_where_it_was_looked_for(tmp_path):
    with pytest.raises(BundleError, match=f"unknown module 'nope'.*{tmp_path}"):
        Catalog([tmp_path, SHIPPED_MODULES]).get("nope")


def test_the_shipped_folder_is_searched_last(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv(MODULE_PATH_ENV, f"{a}{os.pathsep}{b}")
    assert module_path() == (a, b, SHIPPED_MODULES)
    assert module_path([b]) == (b, SHIPPED_MODULES)  # given replaces the environment
    assert module_path(f"{b}{os.pathsep}{a}") == (b, a, SHIPPED_MODULES)
    assert module_path([f"{b}{os.pathsep}{a}", a]) == (b, a, SHIPPED_MODULES)  # as argparse gives
    assert module_path([SHIPPED_MODULES, a]) == (SHIPPED_MODULES, a)  # placed first on purpose
    monkeypatch.setenv(MODULE_PATH_ENV, "")
    assert module_path() == (SHIPPED_MODULES,)
    monkeypatch.delenv(MODULE_PATH_ENV)
    assert module_path() == (SHIPPED_MODULES,)


def test_relative_folders_become_absolute(tmp_path, monkeypatch):
    (tmp_path / "mods").mkdir()
    monkeypatch.chdir(tmp_path)
    assert module_path(["mods"]) == (tmp_path / "mods", SHIPPED_MODULES)


def test_a_folder_that_is_not_there_is_an_error(tmp_path):
    with pytest.raises(BundleError, match=f"{tmp_path / 'typo'}.*not a folder"):
        module_path([tmp_path / "typo"])


def test_a_shipped_name_can_be_replaced_by_putting_a_folder_first(tmp_path):
    bundle(tmp_path, "counter", manifest("counter", "9.9"), CODE)
    assert Catalog(module_path([tmp_path])).get("counter").version == "9.9"
    assert Catalog(module_path([])).get("counter").path == Path(SHIPPED_MODULES, "counter")
