"""The topology's REST routes on Ryu's WSGI router, against a simulated switch."""

import json

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from controller import tables  # noqa: E402
from controller.rest import AUTH, INSTANCE, RestApi, guard  # noqa: E402
from tests.unit.test_topology import arp_request  # noqa: E402

H1, H2 = "00:00:00:00:00:01", "00:00:00:00:00:02"


@pytest.fixture
def get(world, rest_auth):
    service, *_ = world
    app = WSGIApplication()
    app.register(RestApi, {INSTANCE: service, AUTH: rest_auth})

    def call(path: str, method: str = "GET") -> tuple[int, object]:
        resp = Request.blank(path, method=method).get_response(guard(app))
        return resp.status_int, json.loads(resp.body)

    return call, service


def test_the_topology_lists_switches_and_located_hosts(get):
    call, service = get
    status, view = call("/netserv/topology")
    assert status == 200
    assert view == {
        "switches": [{"dpid": "0000000000000001", "connected": True, "ready": True}],
        "links": [],
        "hosts": [],
        "probes_refused": 0,
    }
    frame = arp_request(H1, "10.0.0.1", "10.0.0.2")
    service.network.packet_in(1, tables.LEARN, 1, H1, "ff:ff:ff:ff:ff:ff", frame, service.clock())
    (host,) = call("/netserv/topology")[1]["hosts"]
    assert (host["mac"], host["ipv4"], host["dpid"], host["port"]) == (
        H1,
        ["10.0.0.1"],
        "0000000000000001",
        1,
    )


def test_the_path_between_two_hosts_on_one_switch(get):
    call, service = get
    for port, mac, ip in ((1, H1, "10.0.0.1"), (2, H2, "10.0.0.2")):
        frame = arp_request(mac, ip, "10.0.0.9")
        service.network.packet_in(1, tables.FORWARD, port, mac, "ff:ff:ff:ff:ff:ff", frame, 0.0)
    status, view = call("/netserv/topology/path?src=10.0.0.2&dst=10.0.0.1")
    assert status == 200
    assert view["path"] == [
        {"dpid": "0000000000000001", "in_port": 2, "out_port": 1, "netserv": True}
    ]
    assert view["netserv_nodes"] == ["0000000000000001"]


@pytest.mark.parametrize(
    "query, status, words",
    [
        ("", 400, "takes src and dst"),
        ("?src=10.0.0.1", 400, "takes src and dst"),
        ("?src=10.0.0.1&src=10.0.0.2&dst=10.0.0.3", 400, "takes src and dst"),
        ("?src=10.0.0.1&dst=10.0.0.2&via=s2", 400, "takes src and dst"),
        ("?src=10.0.0.1&dst=h2", 400, "'h2' is not an IPv4 address"),
        ("?src=10.0.0.1&dst=10.0.0.2", 503, "host 10.0.0.1 not located yet; it must send"),
    ],
)
def test_a_path_query_is_refused_with_a_reason(get, query, status, words):
    call, _ = get
    got, reply = call("/netserv/topology/path" + query)
    assert got == status and words in reply["error"]


def test_the_topology_is_read_only(get):
    call, _ = get
    assert call("/netserv/topology", method="POST")[0] == 405
