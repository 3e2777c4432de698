"""The frame view: headers parsed as scapy parses them, setters that leave every checksum
as scapy computes it for the changed packet."""

import ipaddress
import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from nodes.blocks import Frame
from nodes.blocks.checksum import checksum, update

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
ADDRS = {4: ("10.0.0.1", "10.0.0.2", "10.1.2.3"), 6: ("fd00::1", "fd00::2", "fd00::a:3")}


def packet(version: int, l4: str, vlans: int = 0, **l4_fields) -> Packet:
    src, dst, _ = ADDRS[version]
    pkt = Ether(**MACS)
    if vlans == 2:
        pkt = pkt / Dot1AD(vlan=100) / Dot1Q(vlan=7, prio=5)
    elif vlans == 1:
        pkt = pkt / Dot1Q(vlan=7, prio=5)
    pkt = pkt / (
        IP(src=src, dst=dst, ttl=9, tos=0x12)
        if version == 4
        else IPv6(src=src, dst=dst, hlim=9, tc=0x12, fl=77)
    )
    if l4 == "tcp":
        pkt = pkt / TCP(sport=1234, dport=80, seq=7, ack=9, flags="PA", **l4_fields)
    elif l4 == "udp":
        pkt = pkt / UDP(sport=1234, dport=53, **l4_fields)
    else:
        pkt = pkt / (ICMP(type=8, id=5, seq=6) if version == 4 else ICMPv6EchoRequest(id=5, seq=6))
    return Ether(bytes(pkt / Raw(b"payload!" * 3)))  # as received: every field filled in


def view(pkt: Packet) -> tuple[bytearray, Frame]:
    buf = bytearray(bytes(pkt))
    return buf, Frame(memoryview(buf))


def rebuilt(pkt: Packet, **changes) -> bytes:
    """Return `pkt` with the changes, its checksums computed by scapy."""
    new = pkt.copy()
    ip = new[IP] if IP in new else new[IPv6]
    for field, value in changes.items():
        layer, name = field.split(".")
        target = {"ip": ip, "l4": ip.payload, "eth": new[Ether]}[layer]
        setattr(target, name, value)
    if IP in new:
        del new[IP].chksum
    l4 = ip.payload
    for name in ("chksum", "cksum"):  # ICMPv6 calls it cksum
        if name in l4.fields and (IPv6 in new or l4.fields[name] != 0):  # 0 = none over IPv4
            delattr(l4, name)
    return bytes(new)


CASES = [(v, l4, vlans) for v in (4, 6) for l4 in ("tcp", "udp", "icmp") for vlans in (0, 1, 2)]


@pytest.mark.parametrize("version, l4, vlans", CASES)
def test_headers_read_as_scapy_reads_them(version, l4, vlans):
    pkt = packet(version, l4, vlans)
    _, f = view(pkt)
    assert (f.eth.src, f.eth.dst) == (MACS["src"], MACS["dst"])
    assert f.eth.type == f.ethertype == (0x0800 if version == 4 else 0x86DD)
    assert len(f.vlans) == vlans
    if vlans:
        assert (f.vlans[-1].vid, f.vlans[-1].pcp) == (7, 5)
        assert f.vlan.vid == (100 if vlans == 2 else 7)
    else:
        assert f.vlan is None
    ip = f.ipv4 if version == 4 else f.ipv6
    assert f.ip is ip or f.ip.offset == ip.offset
    assert (f.ipv6 if version == 4 else f.ipv4) is None
    assert (str(ip.src), str(ip.dst)) == ADDRS[version][:2]
    assert ip.ttl == 9 and ip.dscp == 0x12 >> 2 and ip.ecn == 0x12 & 3
    header = {"tcp": f.tcp, "udp": f.udp, "icmp": f.icmp}[l4]
    assert header is not None and f.l4.offset == header.offset
    assert [h is None for h in (f.tcp, f.udp, f.icmp)].count(True) == 2
    assert header.checksum_ok is True
    if version == 4:
        assert f.ipv4.checksum_ok and f.ipv4.checksum == pkt[IP].chksum
    if l4 == "tcp":
        assert (f.tcp.sport, f.tcp.dport, f.tcp.seq, f.tcp.ack) == (1234, 80, 7, 9)
        assert f.tcp.flags == 0x18 and f.tcp.window == 8192
    elif l4 == "udp":
        assert (f.udp.sport, f.udp.dport, f.udp.udp_length) == (1234, 53, 8 + 24)
    else:
        assert (f.icmp.type, f.icmp.id, f.icmp.seq, f.icmp.v6) == (
            8 if version == 4 else 128,
            5,
            6,
            version == 6,
        )
    assert bytes(header.payload).endswith(b"payload!" * 3)


@pytest.mark.parametrize("version, l4, vlans", CASES)
def test_address_setters_fix_the_ip_and_transport_checksums(version, l4, vlans):
    pkt = packet(version, l4, vlans)
    buf, f = view(pkt)
    new = ADDRS[version][2]
    f.ip.dst = new
    f.ip.src = ipaddress.ip_address(ADDRS[version][1])
    assert bytes(buf) == rebuilt(pkt, **{"ip.dst": new, "ip.src": ADDRS[version][1]})
    assert f.modified and f.l4.checksum_ok


@pytest.mark.parametrize("version, l4, vlans", [c for c in CASES if c[1] != "icmp"])
def test_port_setters_fix_the_transport_checksum(version, l4, vlans):
    pkt = packet(version, l4, vlans)
    buf, f = view(pkt)
    f.l4.sport, f.l4.dport = 40000, 8080
    assert bytes(buf) == rebuilt(pkt, **{"l4.sport": 40000, "l4.dport": 8080})


@pytest.mark.parametrize("version, vlans", [(4, 0), (4, 1), (6, 0), (6, 2)])
def test_ttl_and_dscp_setters(version, vlans):
    pkt = packet(version, "udp", vlans)
    buf, f = view(pkt)
    f.ip.ttl, f.ip.dscp, f.ip.ecn = 200, 46, 1
    tos = (46 << 2) | 1
    if version == 4:
        assert bytes(buf) == rebuilt(pkt, **{"ip.ttl": 200, "ip.tos": tos})
        assert f.ipv4.checksum_ok
    else:
        assert bytes(buf) == rebuilt(pkt, **{"ip.hlim": 200, "ip.tc": tos})
        f.ipv6.flow_label = 0xABCDE
        assert bytes(buf) == rebuilt(pkt, **{"ip.hlim": 200, "ip.tc": tos, "ip.fl": 0xABCDE})


@pytest.mark.parametrize("version", [4, 6])
def test_icmp_type_and_code_setters(version):
    pkt = packet(version, "icmp", 1)
    buf, f = view(pkt)
    f.icmp.type = 0 if version == 4 else 129
    f.icmp.code = 3
    assert bytes(buf) == rebuilt(pkt, **{"l4.type": f.icmp.type, "l4.code": 3})


def test_mac_and_vlan_setters():
    pkt = packet(4, "udp", 2)
    buf, f = view(pkt)
    f.eth.src, f.eth.dst = "02:aa:bb:cc:dd:ee", b"\x02\x11\x22\x33\x44\x55"
    f.vlans[1].vid, f.vlans[1].pcp = 99, 2
    expected = pkt.copy()
    expected[Ether].src, expected[Ether].dst = "02:aa:bb:cc:dd:ee", "02:11:22:33:44:55"
    expected[Dot1Q].vlan, expected[Dot1Q].prio = 99, 2
    assert bytes(buf) == bytes(expected)


def test_udp_over_ipv4_without_a_checksum_keeps_none():
    pkt = packet(4, "udp", 0, chksum=0)
    buf, f = view(pkt)
    assert f.udp.checksum == 0 and f.udp.checksum_ok is None
    f.ipv4.dst, f.udp.dport = "10.9.9.9", 5353
    assert f.udp.checksum == 0
    f.fix_checksums()
    assert f.udp.checksum == 0 and f.ipv4.checksum_ok
    assert bytes(buf) == rebuilt(pkt, **{"ip.dst": "10.9.9.9", "l4.dport": 5353})


def test_udp_over_ipv6_gets_its_mandatory_checksum_when_it_had_none():
    pkt = packet(6, "udp", 1, chksum=0)
    for change in ("address", "port"):
        buf, f = view(pkt)
        if change == "address":
            f.ipv6.dst = "fd00::9"
            expected = rebuilt(pkt, **{"ip.dst": "fd00::9"})
        else:
            f.udp.dport = 9
            expected = rebuilt(pkt, **{"l4.dport": 9})
        assert bytes(buf) == expected and f.udp.checksum_ok


@pytest.mark.parametrize("version", [4, 6])
def test_a_udp_checksum_that_computes_to_zero_is_sent_as_all_ones(version):
    src, dst, _ = ADDRS[version]

    def make(sport: int, word: int) -> Packet:
        ip = IP(src=src, dst=dst) if version == 4 else IPv6(src=src, dst=dst)
        payload = Raw(b"abcd" + word.to_bytes(2, "big"))
        return Ether(bytes(Ether(**MACS) / ip / UDP(sport=sport, dport=53) / payload))

    # With the last word equal to the checksum computed without it, the sum is all ones
    # and the checksum computes to 0, which is sent as 0xFFFF.
    word = make(4000, 0)[UDP].chksum
    target = make(4000, word)
    assert target[UDP].chksum == 0xFFFF
    buf, f = view(make(4001, word))
    f.udp.sport = 4000
    assert f.udp.checksum == 0xFFFF and bytes(buf) == bytes(target)


def test_ethernet_padding_is_not_part_of_the_datagram():
    pkt = Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(b"x")
    padded = bytes(pkt) + b"\xee" * (60 - len(pkt))
    buf = bytearray(padded)
    f = Frame(buf)
    assert f.udp.checksum_ok and bytes(f.udp.payload) == b"x"
    f.udp.dport = 3
    f.fix_checksums()
    expected = pkt.copy()
    expected[UDP].dport = 3
    del expected[UDP].chksum
    assert bytes(buf) == bytes(expected) + b"\xee" * (60 - len(pkt))


def test_fix_checksums_after_writing_bytes_directly():
    pkt = packet(4, "tcp", 1)
    buf, f = view(pkt)
    f.tcp.payload[0:4] = b"PAYL"
    buf[f.ipv4.offset + 8] = 1  # the TTL, written by hand
    assert not f.ipv4.checksum_ok and not f.tcp.checksum_ok
    f.fix_checksums()
    expected = pkt.copy()
    expected[Raw].load = b"PAYL" + expected[Raw].load[4:]
    expected[IP].ttl = 1
    del expected[IP].chksum, expected[TCP].chksum
    assert bytes(buf) == bytes(expected)


def test_ipv6_extension_headers_are_walked():
    pkt = (
        Ether(**MACS)
        / IPv6(src="fd00::1", dst="fd00::2")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / UDP(sport=5, dport=6)
        / Raw(b"data")
    )
    buf, f = view(pkt)
    assert f.ipv6.next_header == 0 and f.ipv6.proto == 17
    assert f.udp.dport == 6 and f.udp.checksum_ok
    f.ipv6.src, f.udp.dport = "fd00::77", 7
    expected = pkt.copy()
    expected[IPv6].src, expected[UDP].dport = "fd00::77", 7
    del expected[UDP].chksum
    assert bytes(buf) == bytes(expected)


def test_fragments_carry_ports_only_in_the_first():
    whole = (
        Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=7, dport=8) / Raw(b"z" * 100)
    )
    frags = fragment(whole[IP], fragsize=48)
    assert len(frags) > 1
    first, later = (Ether(**MACS) / frag for frag in (frags[0], frags[-1]))
    fb, ff = view(first)
    lb, lf = view(later)
    assert ff.udp is not None and ff.ipv4.fragment and ff.udp.checksum_ok is None
    assert lf.udp is None and lf.l4 is None and lf.flow_key()[3:] == (0, 0)
    ff.udp.dport = 9  # the checksum covers the whole datagram: updated, not computed
    changed = whole.copy()
    changed[UDP].dport = 9
    del changed[UDP].chksum
    assert ff.udp.checksum == Ether(bytes(changed))[UDP].chksum
    v6 = (
        Ether(**MACS)
        / IPv6(src="fd00::1", dst="fd00::2")
        / IPv6ExtHdrFragment(offset=5, nh=17)
        / Raw(b"q" * 16)
    )
    assert Frame(bytes(v6)).udp is None and Frame(bytes(v6)).ipv6.fragment


def test_flow_keys():
    f = Frame(bytes(packet(4, "tcp")))
    key = f.flow_key()
    assert key == (6, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1234, 80)
    back = Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=1234)
    assert Frame(bytes(back)).flow_key(bidirectional=True) == f.flow_key(bidirectional=True)
    assert Frame(bytes(back)).flow_key() != key
    assert Frame(bytes(packet(6, "icmp"))).flow_key()[3:] == (0, 0)
    assert Frame(bytes(Ether(type=0x0806) / Raw(b"\0" * 28))).flow_key() is None


def test_a_read_only_frame_reads_and_refuses_to_be_written():
    f = Frame(bytes(packet(4, "udp")))
    assert f.udp.dport == 53
    with pytest.raises(TypeError):
        f.udp.dport = 1


@pytest.mark.parametrize(
    "setter, value",
    [
        ("ttl", 256),
        ("ttl", -1),
        ("ttl", True),
        ("dscp", 64),
        ("src", "10.0.0.300"),
        ("src", "fd00::1"),
        ("dst", b"\1\2\3"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(setter, value):
    pkt = packet(4, "udp")
    buf, f = view(pkt)
    with pytest.raises(ValueError):
        setattr(f.ipv4, setter, value)
    with pytest.raises(ValueError):
        f.udp.dport = 70000
    with pytest.raises(ValueError):
        f.eth.src = "02:00:00:00:00"
    assert bytes(buf) == bytes(pkt) and not f.modified


def test_cut_and_random_frames_parse_to_none_not_to_an_exception():
    rng = random.Random(7)
    samples = [bytes(packet(v, l4, vl)) for v, l4, vl in CASES]
    samples += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(80))) for _ in range(300)]
    for sample in samples:
        for end in range(0, len(sample) + 1, 3):
            f = Frame(bytearray(sample[:end]))
            for name in ("eth", "vlans", "ipv4", "ipv6", "tcp", "udp", "icmp"):
                getattr(f, name)
            f.flow_key()
            if f.l4 is not None:
                f.l4.checksum_ok  # noqa: B018 - must not raise on a cut segment
            f.fix_checksums()


def test_an_updated_checksum_equals_the_one_computed_whole():
    rng = random.Random(3)
    for _ in range(500):
        data = bytearray(rng.getrandbits(8) for _ in range(rng.randrange(2, 64, 2)))
        csum = checksum(data)
        at = rng.randrange(0, len(data), 2)
        old = bytes(data[at : at + 2])
        data[at : at + 2] = rng.getrandbits(16).to_bytes(2, "big")
        assert update(csum, old, data[at : at + 2]) == checksum(data)
    odd = b"\x01\x02\x03"
    assert checksum(odd) == checksum(odd + b"\0")  # an odd byte is padded with zero


def test_a_cut_vlan_tag_leaves_the_ethernet_header_readable():
    f = Frame(bytes(packet(4, "udp", 1))[:16])
    assert f.eth.src == MACS["src"] and f.eth.type is None and f.vlans == () and f.ip is None
