"""Signaling datagrams read from punted frames, and the frames that answer them, checked
against scapy's own dissection and checksums."""

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from controller.sigframes import answer_frame, parse_datagram
from signaling.wire import SIGNALING_PORT

H1, H2 = "00:00:00:00:00:01", "00:00:00:00:00:02"
PAYLOAD = b"NS\x01\x01" + bytes(60)


def v4(payload: bytes = PAYLOAD, **ip) -> bytes:
    pkt = Ether(src=H1, dst=H2) / IP(src="10.0.0.1", dst="10.0.0.2", **ip)
    return bytes(pkt / UDP(sport=40000, dport=SIGNALING_PORT) / Raw(payload))


def v6(payload: bytes = PAYLOAD) -> bytes:
    pkt = Ether(src=H1, dst=H2) / IPv6(src="2001:db8::1", dst="2001:db8::2")
    return bytes(pkt / UDP(sport=40000, dport=SIGNALING_PORT) / Raw(payload))


@pytest.mark.parametrize(
    "frame, version, src, dst",
    [
        (v4(), 4, "10.0.0.1", "10.0.0.2"),
        (v6(), 6, "2001:db8::1", "2001:db8::2"),
        (v4(options=b"\x01\x01\x01\x00"), 4, "10.0.0.1", "10.0.0.2"),  # IPv4 options
        (v4() + bytes(6), 4, "10.0.0.1", "10.0.0.2"),  # Ethernet padding after the datagram
    ],
)
def test_a_signaling_datagram_is_read_from_its_frame(frame, version, src, dst):
    d = parse_datagram(frame)
    assert d is not None and d.payload == PAYLOAD
    assert (d.version, d.src, d.dst, d.sport, d.dport) == (version, src, dst, 40000, SIGNALING_PORT)
    assert (d.eth_src, d.eth_dst) == (bytes.fromhex("000000000001"), bytes.fromhex("000000000002"))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        bytes(14),
        v4()[:30],  # cut inside the IP header
        v4()[:40],  # cut inside the UDP header
        v4()[:-10],  # shorter than its lengths say
        bytes(Ether() / IP(dst="10.0.0.2") / UDP(dport=SIGNALING_PORT + 1) / Raw(PAYLOAD)),
        bytes(Ether() / IP(dst="10.0.0.2", flags="MF") / UDP(dport=SIGNALING_PORT) / Raw(PAYLOAD)),
        bytes(Ether() / IP(dst="10.0.0.2", frag=8) / Raw(PAYLOAD)),
        bytes(Ether() / IP(dst="10.0.0.2", proto=6) / Raw(PAYLOAD)),
        bytes(Ether() / Dot1Q(vlan=5) / IP(dst="10.0.0.2") / UDP(dport=SIGNALING_PORT)),
        bytes(Ether() / IPv6(dst="::1", nh=0) / Raw(bytes(8)) / UDP(dport=SIGNALING_PORT)),
    ],
)
def test_anything_else_is_not_a_signaling_datagram(frame):
    assert parse_datagram(frame) is None


@pytest.mark.parametrize("request_frame", [v4(), v6()], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("answer", [b"", b"x", b"an answer of odd length", bytes(1232)])
def test_the_answer_goes_back_to_the_requester_from_the_signaling_port(request_frame, answer):
    frame = answer_frame(parse_datagram(request_frame), answer)
    pkt = Ether(frame)
    ip = pkt[IP] if IP in pkt else pkt[IPv6]
    assert (pkt.src, pkt.dst) == (H2, H1)
    assert (ip.src, ip.dst) in {("10.0.0.2", "10.0.0.1"), ("2001:db8::2", "2001:db8::1")}
    assert (pkt[UDP].sport, pkt[UDP].dport) == (SIGNALING_PORT, 40000)
    assert bytes(pkt[UDP].payload) == answer and len(frame) == len(bytes(pkt))
    # scapy recomputes every length and checksum left unset: they must agree
    fresh = Ether(frame)
    for layer in (fresh[IP] if IP in fresh else fresh[IPv6], fresh[UDP]):
        for name in ("len", "plen", "chksum"):
            if name in layer.fields:
                delattr(layer, name)
    assert bytes(fresh) == frame
