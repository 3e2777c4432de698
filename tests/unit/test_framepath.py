"""A session's frame path from the switch's and the agent's counters."""

from controller.framepath import frame_path
from controller.messages import FlowStats, PortStats

AGENT = {
    "packets": 90,
    "dropped": 5,
    "returned": 84,
    "send_failed": 1,
    "node": {"queue_dropped": 10, "too_big": 0, "send_failed": 1, "switch_queue_dropped": 3},
}


def test_what_the_switch_sent_is_what_the_agent_got_plus_what_was_lost():
    flows = [FlowStats(0, 1003, 7, 100, 0), FlowStats(2, 100, 7, 40, 0)]  # only table 0 detours
    path = frame_path(flows, [PortStats(4, 0, 100, 0, 0, 0, 0)], AGENT)
    assert path["switch_sent"] == 100 and path["agent_received"] == 90
    assert path["lost_before_agent"] == 10
    assert (path["module_dropped"], path["agent_returned"], path["agent_send_failed"]) == (5, 84, 1)
    assert path["node_losses"] == {
        "switch_tx_dropped": 0,
        "agent_queue_dropped": 10,
        "agent_too_big": 0,
        "agent_send_failed": 1,
        "switch_queue_dropped": 3,
    }


def test_an_agent_read_after_the_switch_never_shows_negative_loss():
    path = frame_path([FlowStats(0, 1003, 7, 80, 0)], [], AGENT)  # the agent ran ahead
    assert path["lost_before_agent"] == 0 and path["node_losses"]["switch_tx_dropped"] is None


def test_unknown_switch_counters_stay_unknown():
    path = frame_path(None, None, {"packets": 1})
    assert path["switch_sent"] is None and path["lost_before_agent"] is None
    assert path["node_losses"]["agent_queue_dropped"] is None
