"""``PerSubscription``: values remembered per subscription object, bounded; ``PerKey``: the same by key value;
``PeriodWindows``: both, for a counter statement's windows."""

from __future__ import annotations

from gateway.policy.builtin._remembered import (
    REMEMBERED_MAX,
    PeriodWindows,
    PerKey,
    PerSubscription,
    same_per_subscription,
)
from gateway.policy.values import parse_value


class Equal:
    """A subscription stand-in equal to every other: the memory must go by identity, not equality."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


def test_values_go_by_the_subscription_object():
    memory: PerSubscription[str] = PerSubscription()
    first, second = Equal(), Equal()
    memory.put(first, "first")
    memory.put(None, "anonymous")
    assert memory.get(first) == "first"
    assert memory.get(second) is None
    assert memory.get(None) == "anonymous"
    memory.clear()
    assert memory.get(first) is None


def test_at_most_remembered_max_entries_until_cleared():
    memory: PerSubscription[int] = PerSubscription()
    subscriptions = [object() for _ in range(REMEMBERED_MAX + 1)]
    for number, subscription in enumerate(subscriptions):
        memory.put(subscription, number)
    assert len(memory.entries) == REMEMBERED_MAX
    assert memory.get(subscriptions[-1]) is None  # not remembered: evaluated each time
    memory.clear()
    memory.put(subscriptions[-1], 1)
    assert memory.get(subscriptions[-1]) == 1


def test_which_values_are_the_same_per_subscription():
    def value(text: str):
        return parse_value(text, where="test")

    assert same_per_subscription(value("@(context.Subscription.Id)"))
    assert not same_per_subscription(value("@(context.Subscription.Key)"))
    assert not same_per_subscription(value("literal"))  # the same for every request: nothing to remember


def test_values_of_a_period_are_forgotten_when_another_begins():
    memory: PerSubscription[str] = PerSubscription()
    subscription = object()
    assert memory.get_in_period(60.0, subscription) is None
    memory.put(subscription, "first minute")
    assert memory.get_in_period(60.0, subscription) == "first minute"
    assert memory.get_in_period(120.0, subscription) is None  # a new period: everything forgotten
    assert memory.entries == {}
    memory.put(subscription, "second minute")
    assert memory.get_in_period(120.0, subscription) == "second minute"
    assert memory.get_in_period(60.0, subscription) is None  # a clock set back: a period again, not a stale value


def test_per_key_goes_by_value_within_a_period_and_is_bounded():
    memory: PerKey[str] = PerKey()
    assert memory.get_in_period(60.0, ("10.0.0.1", 5, 60)) is None
    memory.put(("10.0.0.1", 5, 60), "window")
    assert memory.get_in_period(60.0, ("10.0.0." + "1", 5, 60)) == "window"  # an equal key, another object
    assert memory.get(("10.0.0.1", 6, 60)) is None  # other limits: another window
    assert memory.get_in_period(120.0, ("10.0.0.1", 5, 60)) is None  # a new period: everything forgotten
    for number in range(REMEMBERED_MAX + 1):
        memory.put(str(number), "w")
    assert len(memory.entries) == REMEMBERED_MAX
    assert memory.get(str(REMEMBERED_MAX)) is None  # not remembered: built each time


def test_period_windows_are_built_once_per_key_and_period():
    built: list[tuple[str, float]] = []

    def build(key: str, start: float) -> tuple[str, float]:
        built.append((key, start))
        return (key, start)

    subscription, other = object(), object()
    for per_subscription in (True, False):
        built.clear()
        kept: PeriodWindows[tuple[str, float]] = PeriodWindows(per_subscription)
        remembered = kept.by_subscription
        if remembered is not None:  # what the statements ask first, before they evaluate the key
            assert remembered.get_in_period(60.0, subscription) is None
        first = kept.of_key(60.0, subscription, "k", build, "k", 60.0)
        assert kept.of_key(60.0, other, "k", build, "k", 60.0) is first  # the same object for every request
        assert kept.of_key(60.0, other, "j", build, "j", 60.0) == ("j", 60.0)
        assert built == [("k", 60.0), ("j", 60.0)]
        # per subscription (found before the key is evaluated) only when the key is decided by the subscription
        if per_subscription:
            assert remembered is not None
            assert remembered.get_in_period(60.0, subscription) is first
            assert remembered.get_in_period(120.0, subscription) is None  # another period
        else:
            assert remembered is None
        assert kept.of_key(120.0, subscription, "k", build, "k", 120.0) == ("k", 120.0)
        assert built[-1] == ("k", 120.0)
