"""How a bridge reads its ports: which type is tried, when AF_XDP counts as failed."""

from __future__ import annotations

import pytest

from topo.ports import (
    AFPACKET,
    AFXDP,
    DEFAULT_PORT_TYPE,
    SYSTEM,
    afxdp_failed,
    check_port_type,
    ovs_iface_types,
    planned_type,
    summary,
)

TYPES = "[afxdp, afxdp-nonpmd, bareudp, erspan, geneve, internal, patch, system, tap, vxlan]"


def test_the_default_is_system_ports_with_large_buffers() -> None:
    assert DEFAULT_PORT_TYPE == SYSTEM


def test_an_unknown_port_type_is_refused() -> None:
    assert check_port_type(AFXDP) == AFXDP
    with pytest.raises(ValueError, match="choose from system, afxdp, afpacket"):
        check_port_type("dpdk")


def test_afxdp_is_tried_only_where_the_build_and_datapath_have_it() -> None:
    types = ovs_iface_types(TYPES)
    assert "afxdp-nonpmd" in types and "system" in types
    assert planned_type(AFXDP, "user", types) == AFXDP
    assert planned_type(AFXDP, "user", types - {"afxdp-nonpmd"}) == SYSTEM  # a build without
    assert planned_type(AFXDP, "kernel", types) == SYSTEM  # the kernel reads its own ports
    assert planned_type(SYSTEM, "user", types) == SYSTEM
    assert planned_type(AFPACKET, "user", types) == SYSTEM


def test_a_port_that_did_not_become_afxdp_failed() -> None:
    assert not afxdp_failed('"afxdp-nonpmd"', "[]")
    assert not afxdp_failed("afxdp-nonpmd", "")
    assert afxdp_failed(
        "afxdp-nonpmd", '"could not open network device s1-eth1 (Invalid argument)"'
    )
    assert afxdp_failed('""', "[]")  # OVS shows another type


def test_a_bridge_summary_names_mixed_ports() -> None:
    assert summary({"s1-eth1": AFXDP, "s1-ns": AFXDP}) == AFXDP
    assert summary({}) == ""
    assert summary({"s1-eth1": AFXDP, "s1-ns": SYSTEM}) == "mixed (s1-eth1: afxdp, s1-ns: system)"
