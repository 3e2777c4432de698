"""Where service modules run, and what they may spend.

Two tiers: trusted modules run in the agent's own packet loop; isolated ones (the
default) each in a process of their own, confined (`confine.py`: uid, rlimits,
cgroups, Landlock, seccomp), fed frames in batches over a socket pair (`wire.py`,
`proxy.py`, `worker.py`). Budgets (`budgets.py`) and the failure policy are applied by
each module instance's guard (`guard.py`), in both tiers. `policy.py` is the node
operator's say: which modules are trusted, which capabilities are granted.

A process per module instance, not per session's chain: each module has grants,
budgets and a failure policy of its own, which its process's Landlock rules, seccomp
filter and cgroup carry, and a module that fails takes only itself down, while the
rest of its chain goes on. The cost is a round trip per isolated module per batch.
"""
