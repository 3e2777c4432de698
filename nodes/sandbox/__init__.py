"""Where service modules run, and what they may spend.

Two tiers: trusted modules run in the agent's own packet loop; isolated ones (the
default) each in a process of their own, confined (`confine.py`: uid, rlimits,
cgroups, Landlock, seccomp), fed frames in batches over a socket pair (`wire.py`,
`proxy.py`, `worker.py`). Budgets (`budgets.py`) and the failure policy are applied by
each module instance's guard (`guard.py`), in both tiers. `policy.py` is the node
operator's say: which modules are trusted, which capabilities are granted.
"""
