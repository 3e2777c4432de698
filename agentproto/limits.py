"""The numbers the controller and its agents must agree on, each declared once.

The rule the graces keep: the switch never keeps a detour longer than the agent keeps
its chain, so a flow is never detoured to an agent that no longer serves it. The
controller ends a session at its lifetime; after that, as the last resort when no
controller is left to end it, the switch's hard timeout drops the detour at most
EXPIRY_GRACE seconds later (it is set to the rest of the lifetime rounded down, plus
EXPIRY_GRACE: `controller/pipeline.py`), and the agent drops the chain EXPIRY_GRACE
seconds after the lifetime it was last sent, counted from when it got it, which is
never before the controller counted it.
"""

from __future__ import annotations

# A detour names its session at the node's agent by a tag carried in one 802.1Q header
# (`agentproto/tags.py`): its VLAN id, of TAG_VIDS (802.1Q leaves 0, priority tag only,
# and 4095, reserved, out), and its 3 priority bits. So a node holds 8 × 4094 sessions.
TAG_VIDS = range(1, 4095)
TAG_PCPS = range(8)
SESSION_TAGS = range(1, len(TAG_PCPS) * len(TAG_VIDS) + 1)
MAX_LIFETIME = 24 * 3600  # seconds a session may be given at once (at least 1)
MAX_CHAIN = 8  # modules in one session's chain (at least 1)
EXPIRY_GRACE = 10  # seconds past a session's lifetime; see above

HEARTBEAT = 2.0  # seconds between an agent's registrations, which are its heartbeat
AGENT_DEAD_AFTER = 3 * HEARTBEAT  # seconds of silence before the controller gives an agent up
HEALTH_TIMEOUT = 2.0  # seconds the controller waits for an agent's GET /health
# Seconds an agent waits for its registration's answer: longer than HEALTH_TIMEOUT,
# since the controller may first ask the node's previous agent whether it still runs.
REGISTER_TIMEOUT = 5.0
CALL_TIMEOUT = 5.0  # seconds the controller waits for an agent's answer to other calls
