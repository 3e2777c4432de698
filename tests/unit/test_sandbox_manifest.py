"""Tiers, failure policy, capabilities and budgets: the manifest's fields and the node's policy."""

import argparse
import re
from pathlib import Path

import pytest

from nodes.bundle import SHIPPED_MODULES, BundleError, Catalog, read_manifest
from nodes.sandbox.budgets import (
    HANG_GRACE,
    TIME_CREDIT,
    Budget,
    TimeAccount,
    admit,
    error_bucket,
    frame_bucket,
)
from nodes.sandbox.policy import PolicyError, TierPolicy
from tests.unit.conftest import Clock

HEAD = 'name = "m"\nentry = "module:M"\n'


def manifest(tmp_path: Path, extra: str, name: str = "m"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "manifest.toml").write_text(HEAD.replace('"m"', f'"{name}"', 1) + extra)
    (folder / "module.py").write_text("")
    return read_manifest(folder)


def test_a_manifest_that_says_nothing_gets_the_defaults(tmp_path):
    m = manifest(tmp_path, "")
    assert (m.tier, m.failure, m.capabilities, m.budget) == ("isolated", "open", (), Budget())
    assert m.to_json()["budget"] == {
        "time_per_frame": 0.001,
        "frames_per_second": 0,
        "memory_mib": 64,
        "cpu_cores": 0.5,
        "errors_per_second": 10.0,
    }


def test_a_manifest_declares_tier_failure_capabilities_and_budget(tmp_path):
    m = manifest(
        tmp_path,
        'tier = "trusted"\nfailure = "closed"\ncapabilities = ["net", "read:/usr/share/x"]\n'
        "[budget]\ntime_per_frame = 0.0005\nframes_per_second = 1000\nmemory_mib = 128\n"
        "cpu_cores = 1\nerrors_per_second = 2\n",
    )
    assert (m.tier, m.failure) == ("trusted", "closed")
    assert m.capabilities == ("net", "read:/usr/share/x")
    assert m.budget == Budget(0.0005, 1000, 128, 1.0, 2.0)
    assert isinstance(m.budget.cpu_cores, float)  # an int given for a float is taken as one


@pytest.mark.parametrize(
    "extra, message",
    [
        ('tier = "kernel"\n', "tier must be one of"),
        ("tier = 1\n", "tier must be one of"),
        ('failure = "maybe"\n', "failure must be one of"),
        ('capabilities = "net"\n', "capabilities must be a list"),
        ('capabilities = ["raw"]\n', "capability 'raw'"),
        ('capabilities = ["read:etc/passwd"]\n', "absolute, normalized"),
        ('capabilities = ["read:/etc/../root"]\n', "absolute, normalized"),
        ("budget = 5\n", "budget must be a table"),
        ("[budget]\nmemory = 64\n", "unknown key(s) ['memory']"),
        ("[budget]\nmemory_mib = 8\n", "budget.memory_mib must be 32"),
        ("[budget]\nmemory_mib = 64.0\n", "budget.memory_mib must be a number"),
        ("[budget]\ntime_per_frame = true\n", "budget.time_per_frame must be a number"),
        ("[budget]\ntime_per_frame = 2.0\n", "budget.time_per_frame must be"),
        ("[budget]\ncpu_cores = nan\n", "budget.cpu_cores must be"),
        ("[budget]\nframes_per_second = -1\n", "budget.frames_per_second must be"),
        ("[budget]\nerrors_per_second = 0\n", "budget.errors_per_second must be"),
    ],
)
def test_bad_tier_failure_capability_or_budget_is_refused_saying_what(tmp_path, extra, message):
    with pytest.raises(BundleError, match=re.escape(message)):
        manifest(tmp_path, extra)


def test_the_shipped_modules_ask_for_the_trusted_tier():
    good, bad = Catalog(SHIPPED_MODULES).all()
    assert bad == [] and {m.tier for m in good} == {"trusted"}


def test_the_default_policy_trusts_only_the_shipped_folder(tmp_path):
    policy = TierPolicy.parse(None)
    shipped = Catalog(SHIPPED_MODULES).get("counter")
    look_alike = manifest(tmp_path, 'tier = "trusted"\n', name="counter")  # same name, elsewhere
    assert policy.tier(shipped) == "trusted"
    assert policy.tier(look_alike) == "isolated"


def test_a_module_is_trusted_only_when_it_asks_and_the_policy_names_it(tmp_path):
    asks = manifest(tmp_path, 'tier = "trusted"\n', name="asks")
    quiet = manifest(tmp_path, "", name="quiet")
    policy = TierPolicy.parse(["asks", "quiet"])
    assert policy.tier(asks) == "trusted" and policy.tier(quiet) == "isolated"
    assert TierPolicy.parse(["none"]).tier(Catalog(SHIPPED_MODULES).get("null")) == "isolated"


@pytest.mark.parametrize(
    "trusted, grants, message",
    [
        (["none", "null"], [], "cannot be given with other modules"),
        (["Bad-Name"], [], "is not a module name"),
        (None, ["geo"], "is not MODULE=CAPABILITY"),
        (None, ["geo=raw"], "capability 'raw'"),
        (None, ["geo=read:relative"], "absolute"),
    ],
)
def test_bad_policy_settings_are_refused(trusted, grants, message):
    with pytest.raises(PolicyError, match=message):
        TierPolicy.parse(trusted, grants)


def test_an_isolated_module_gets_the_capabilities_granted_to_it_and_no_other(tmp_path):
    m = manifest(tmp_path, 'capabilities = ["net", "read:/srv/data"]\n', name="geo")
    full = TierPolicy.parse(None, ["geo=net", "geo=read:/srv/data"])
    assert full.capabilities(m) == ("net", "read:/srv/data")
    assert full.to_json()["grants"] == {"geo": ["net", "read:/srv/data"]}
    with pytest.raises(BundleError, match="asks for capability 'read:/srv/data'.*--grant geo="):
        TierPolicy.parse(None, ["geo=net"]).capabilities(m)
    with pytest.raises(BundleError, match="capability 'net'"):
        TierPolicy.parse(None, ["other=net"]).capabilities(m)


def test_the_deadline_grows_with_the_batch_and_shrinks_with_more_cpu():
    budget = Budget(time_per_frame=0.002, cpu_cores=0.5)
    assert budget.deadline(0) == HANG_GRACE
    assert budget.deadline(64) == pytest.approx(HANG_GRACE + 64 * 0.002 / 0.5)
    assert Budget(time_per_frame=0.002, cpu_cores=2.0).deadline(64) < budget.deadline(64)


def test_the_time_account_absorbs_a_pause_but_not_a_module_slower_than_its_budget():
    account = TimeAccount(per_frame=0.001)
    assert account.charge(64, TIME_CREDIT * 0.9)  # a GC pause once: covered by the credit
    for _ in range(100):
        assert account.charge(64, 0.0005 * 64)  # then well within its budget
    slow = TimeAccount(per_frame=0.001)
    batches = 0
    while slow.charge(10, 0.002 * 10):  # twice its budget, every batch
        batches += 1
    # It overdraws by 10 ms a batch: the credit lasts about TIME_CREDIT / 10 ms batches.
    assert abs(batches - TIME_CREDIT / 0.01) <= 2


def test_frames_over_the_rate_are_not_admitted_and_come_back_with_time():
    clock = Clock()
    bucket = frame_bucket(Budget(frames_per_second=100), clock)
    assert admit(bucket, 64) == 10  # a tenth of a second's worth at once
    assert admit(bucket, 64) == 0
    clock.now += 0.05
    assert admit(bucket, 64) == 5
    assert frame_bucket(Budget(), clock) is None and admit(None, 64) == 64


def test_the_error_bucket_lets_a_burst_of_errors_through_then_runs_dry():
    clock = Clock()
    bucket = error_bucket(Budget(errors_per_second=3), clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 1
    assert bucket.take()


def test_the_agents_options_make_its_policy():
    from nodes.main import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--dpid", "1", "--iface", "a", "--switch-port", "b"]
    args = p.parse_args([*base, "--trusted", "shipped,geo", "--trusted", "x", "--grant", "geo=net"])
    policy = TierPolicy.parse(args.trusted, args.grant)
    assert policy.trusted == {"shipped", "geo", "x"} and policy.grants == {"geo": {"net"}}
    default = p.parse_args(base)
    assert TierPolicy.parse(default.trusted, default.grant) == TierPolicy()
