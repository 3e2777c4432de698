"""The controller freezes its heap each 1,000 sessions more, and collects it all every
ten minutes once anything is frozen."""

from controller.gcpolicy import FREEZE_EVERY, THAW_EVERY, FreezePolicy


def test_a_freeze_each_thousand_sessions_more_then_a_thaw_every_ten_minutes() -> None:
    policy = FreezePolicy()
    assert policy.step(0, 0.0) is None
    assert policy.step(FREEZE_EVERY - 1, 1.0) is None
    assert policy.step(FREEZE_EVERY, 2.0) == "freeze"
    assert policy.step(FREEZE_EVERY + 10, 3.0) is None
    assert policy.step(2 * FREEZE_EVERY, 4.0) == "freeze"
    assert policy.step(10, 5.0) is None  # sessions ended: what they held is freed anyway
    assert policy.step(10, 2.0 + THAW_EVERY) == "thaw"
    assert policy.step(10, 3.0 + THAW_EVERY) is None
    assert policy.step(10 + FREEZE_EVERY, 4.0 + THAW_EVERY) == "freeze"  # counted from the thaw
    assert policy.step(0, 2.0 + 2 * THAW_EVERY) == "thaw"


def test_nothing_frozen_nothing_thawed() -> None:
    policy = FreezePolicy()
    assert [policy.step(5, t * 100.0) for t in range(20)] == [None] * 20
