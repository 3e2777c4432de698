"""The NetServ topologies as pure data: names, addresses, dpids and NetServ marks."""

from __future__ import annotations

import pytest

from topo.topos import (
    LinearTopo,
    MtuIntf,
    SingleSwitchTopo,
    TreeTopo,
    check_ifname,
    netserv_switches,
    topos,
)


def _links(topo: object) -> set[tuple[str, int, str, int]]:
    return {
        (info["node1"], info["port1"], info["node2"], info["port2"])
        for _a, _b, info in topo.links(withInfo=True)
    }


def test_single_switch_names_addresses_and_mark() -> None:
    topo = SingleSwitchTopo(k=3, prefix="x")
    assert topo.switches() == ["xs1"]
    assert topo.hosts() == ["xh1", "xh2", "xh3"]
    assert topo.nodeInfo("xs1")["dpid"] == "0000000000000001"
    assert topo.nodeInfo("xs1")["netserv"] is True
    assert topo.nodeInfo("xh3")["ip"] == "10.0.0.3/8"
    assert topo.nodeInfo("xh3")["mac"] == "00:00:00:00:00:03"
    assert _links(topo) == {("xh1", 0, "xs1", 1), ("xh2", 0, "xs1", 2), ("xh3", 0, "xs1", 3)}


def test_interface_names_are_explicit_and_prefixed() -> None:
    topo = SingleSwitchTopo(k=2, prefix="ab")
    names = {(info["intfName1"], info["intfName2"]) for _a, _b, info in topo.links(withInfo=True)}
    assert names == {("abh1-eth0", "abs1-eth1"), ("abh2-eth0", "abs1-eth2")}


def test_single_switch_can_be_plain() -> None:
    topo = SingleSwitchTopo(k=1, netserv=False)
    assert topo.nodeInfo("s1")["netserv"] is False
    assert netserv_switches(topo) == []


def test_linear_chain_ports_and_numbering() -> None:
    topo = LinearTopo(n=3, k=2)
    assert topo.switches() == ["s1", "s2", "s3"]
    assert topo.hosts() == ["h1", "h2", "h3", "h4", "h5", "h6"]
    assert [topo.nodeInfo(s)["dpid"] for s in topo.switches()] == [f"{i:016x}" for i in (1, 2, 3)]
    assert [topo.nodeInfo(h)["ip"] for h in topo.hosts()] == [f"10.0.0.{i}/8" for i in range(1, 7)]
    links = _links(topo)
    assert ("h3", 0, "s2", 1) in links and ("h6", 0, "s3", 2) in links
    assert ("s1", 3, "s2", 3) in links and ("s2", 4, "s3", 3) in links
    assert netserv_switches(topo) == ["s1", "s2", "s3"]


@pytest.mark.parametrize(
    ("netserv", "expected"),
    [
        (True, ["s1", "s2"]),
        (False, []),
        ([2], ["s2"]),
        ((1,), ["s1"]),
        # as `mn --topo linear,2,1,...` passes them
        (2, ["s2"]),
        ("1+2", ["s1", "s2"]),
        ("False", []),
        ("true", ["s1", "s2"]),
    ],
)
def test_linear_netserv_marks(netserv: object, expected: list[str]) -> None:
    assert netserv_switches(LinearTopo(n=2, netserv=netserv)) == expected


def test_linear_rejects_out_of_range_netserv_index() -> None:
    with pytest.raises(ValueError, match=r"\[3\] are not in 1..2"):
        LinearTopo(n=2, netserv=[3])


def test_name_too_long_is_rejected_with_the_name() -> None:
    # "abcdefghs1-eth1" is 15 characters: allowed.
    SingleSwitchTopo(k=1, netserv=False, prefix="abcdefgh")
    # The agent port "abcdefghis1-ns" fits, but "abcdefghih1-eth0" (16) does not.
    with pytest.raises(ValueError, match="'abcdefghih1-eth0' is 16 characters"):
        SingleSwitchTopo(k=1, prefix="abcdefghi")
    with pytest.raises(ValueError, match="15"):
        LinearTopo(n=10, k=1, prefix="abcdefgh")  # s10-eth2 makes 16


def test_bad_prefix_and_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="prefix"):
        SingleSwitchTopo(prefix="a/b")
    with pytest.raises(ValueError):
        SingleSwitchTopo(k=0)
    with pytest.raises(ValueError):
        LinearTopo(n=0)


def test_check_ifname_limits() -> None:
    assert check_ifname("a" * 15) == "a" * 15
    with pytest.raises(ValueError):
        check_ifname("a" * 16)
    with pytest.raises(ValueError):
        check_ifname("")


def test_single_switch_flag_from_mn_string() -> None:
    assert netserv_switches(SingleSwitchTopo(1, "False")) == []
    assert netserv_switches(SingleSwitchTopo(1, "True")) == ["s1"]


def test_topos_for_mn_custom() -> None:
    assert topos["single"](2).hosts() == ["h1", "h2"]
    assert topos["linear"](3).switches() == ["s1", "s2", "s3"]
    assert topos["tree"] is topos["netserv_tree"] is TreeTopo


def test_tree_numbers_and_wires_as_mn_s_tree() -> None:
    topo = TreeTopo(depth=2, fanout=2, netserv="2+3", prefix="x")
    assert topo.switches() == ["xs1", "xs2", "xs3"]
    assert topo.hosts() == ["xh1", "xh2", "xh3", "xh4"]
    assert _links(topo) == {
        ("xh1", 0, "xs2", 1),
        ("xh2", 0, "xs2", 2),
        ("xs1", 1, "xs2", 3),
        ("xh3", 0, "xs3", 1),
        ("xh4", 0, "xs3", 2),
        ("xs1", 2, "xs3", 3),
    }
    assert netserv_switches(topo) == ["xs2", "xs3"]
    assert [topo.nodeInfo(h)["ip"] for h in topo.hosts()] == [f"10.0.0.{i}/8" for i in range(1, 5)]
    deep = TreeTopo(depth=3, fanout=2)
    assert len(deep.switches()) == 7 and len(deep.hosts()) == 8
    assert netserv_switches(deep) == deep.switches()
    assert ("s2", 1, "s3", 3) in _links(deep) and ("h1", 0, "s3", 1) in _links(deep)
    with pytest.raises(ValueError, match="depth"):
        TreeTopo(depth=0)
    with pytest.raises(ValueError, match=r"\[4\] are not in 1..3"):
        TreeTopo(netserv=[4])


def test_mtu_reaches_every_link_and_only_when_asked() -> None:
    jumbo = LinearTopo(n=2, k=1, mtu=9000)
    infos = [info for _a, _b, info in jumbo.links(withInfo=True)]
    assert len(infos) == 3 and all(i["mtu"] == 9000 and i["intf"] is MtuIntf for i in infos)
    plain = SingleSwitchTopo(k=1)
    assert all("mtu" not in info for _a, _b, info in plain.links(withInfo=True))
    with pytest.raises(ValueError, match="mtu"):
        SingleSwitchTopo(k=1, mtu=70000)
