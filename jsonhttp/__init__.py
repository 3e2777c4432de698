"""JSON over HTTP as NetServ speaks it, whoever the peers are.

`jsonhttp.client.call_json` is the one call of every client (with an optional signer:
`controller/auth.py`), `jsonhttp.strict.decode_json` the one decoder of every server.
Nothing here knows a NetServ message: the controller↔agent contract is `agentproto/`,
the requesters' signaling `signaling/`.
"""
