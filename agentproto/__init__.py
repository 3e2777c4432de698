"""The controller↔agent contract: what a NetServ controller and its node agents say to
each other, defined once and used by both sides and by the tests' fakes.

`agentproto.messages` holds the messages (frozen, checked on construction, with strict
`to_json`/`from_json`), `agentproto.limits` the numbers both sides must agree on (tag
range, lifetimes, graces, heartbeat), `agentproto.fields` the one error, ContractError.
Nothing here opens a socket: `jsonhttp` carries the messages, `controller/auth.py`
signs them. It is not `signaling/`, the requesters' protocol: a different peer (an
endpoint, not the controller's own agents), a different trust (requester keys and
policy, not node keys), a different transport (UDP datagrams, not JSON over HTTP).
"""
