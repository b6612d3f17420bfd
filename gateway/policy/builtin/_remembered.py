"""What a policy statement remembers per subscription: values that depend on the request's subscription alone.

A counter key or a metric dimension whose expression reads nothing but ``context.Subscription`` (its ``Id`` or
``Name``; ``CompiledExpression.subscription_only``, see ``gateway.expressions.dependencies``) has the same value for
every request of a subscription, so a statement may evaluate it once per subscription and keep what it built from it
(``llm-token-limit``'s windows, ``rate-limit-by-key``'s and ``quota-by-key``'s, ``llm-emit-token-metric``'s
emission). ``PerSubscription`` is that memory: keyed by ``id()`` of the ``SubscriptionEntry`` (never by its key,
which the request presented and which is not kept), each entry holding its subscription so the id stays its own while
the entry lasts; a snapshot loaded again brings new entries (and new statements). At most ``REMEMBERED_MAX`` entries;
the statements clear it when what they built stops holding (a new minute or period, another ``Metrics``).

``PerKey`` is the same memory for a counter key that reads more than the subscription: keyed by the key's value
(with whatever else the value remembered depends on, such as the limits), so a statement evaluates the key but builds
its windows once per key and period. ``PeriodWindows`` holds both for a counter statement (``rate-limit-by-key``,
``quota-by-key``): what it built for a counter key and period is the same object for every request of the key and
period, per subscription or per key, so the Redis store's leases (docs/token-limits.md, "Leases") find a window tuple
handed in again by its identity.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

from ..values import Expression, Value

__all__ = ("REMEMBERED_MAX", "PerKey", "PerSubscription", "PeriodWindows", "same_per_subscription")

REMEMBERED_MAX: Final = 4096

T = TypeVar("T")


def same_per_subscription(value: Value) -> bool:
    """Whether ``value`` is an expression whose value is decided by the request's subscription alone."""
    return isinstance(value, Expression) and bool(value.compiled.subscription_only)


class PerSubscription(Generic[T]):
    """Values remembered per subscription object (``None`` for anonymous requests), at most ``REMEMBERED_MAX``."""

    __slots__ = ("entries", "period")

    def __init__(self) -> None:
        self.entries: dict[object, tuple[object, T]] = {}  # id() of a subscription (``PerKey``: the key itself)
        self.period: float | None = None  # the start of the period of the values, for ``get_in_period``

    def get(self, subscription: object) -> T | None:
        """The value remembered for ``subscription``; None when there is none."""
        found = self.entries.get(id(subscription))
        return found[1] if found is not None and found[0] is subscription else None

    def get_in_period(self, start: float, subscription: object) -> T | None:
        """``get`` for values that hold for one period (a counting window): a period that starts elsewhere than the
        remembered values' forgets them all, and its values are remembered from then on."""
        if start != self.period:
            self.entries.clear()
            self.period = start
            return None
        return self.get(subscription)

    def put(self, subscription: object, value: T) -> None:
        """Remember ``value`` for ``subscription``, unless the memory is full (until it is cleared)."""
        self.keep(id(subscription), subscription, value)

    def keep(self, slot: object, owner: object, value: T) -> None:
        """Remember ``value`` under ``slot`` with what it belongs to, unless the memory is full."""
        entries = self.entries
        if len(entries) < REMEMBERED_MAX:
            entries[slot] = (owner, value)

    def clear(self) -> None:
        self.entries.clear()


class PerKey(PerSubscription[T]):
    """Values remembered per hashable key, compared by value (a subscription is compared by identity)."""

    __slots__ = ()

    def get(self, subscription: object) -> T | None:
        """The value remembered for the key ``subscription`` (hashable); None when there is none."""
        found = self.entries.get(subscription)
        return found[1] if found is not None else None

    def put(self, subscription: object, value: T) -> None:
        self.keep(subscription, subscription, value)


class PeriodWindows(Generic[T]):
    """What a counter statement built for a counter key and period (its windows), the same object for every request
    of the key and period: per subscription when the key's value is decided by the subscription alone (found before
    the key is evaluated), and by the key's value (with whatever else the windows depend on) for every request."""

    __slots__ = ("by_key", "by_subscription")

    def __init__(self, per_subscription: bool) -> None:
        # read by the statements themselves first (``get_in_period``; no call of this class on that path), then the
        # key is evaluated and ``of_key`` asked
        self.by_subscription: PerSubscription[T] | None = PerSubscription() if per_subscription else None
        self.by_key: PerKey[T] = PerKey()

    def of_key(self, start: float, subscription: object, key: Hashable, build: Callable[..., T], *args: object) -> T:
        """The windows of ``key`` for the period starting at ``start``: those built before, else ``build(*args)``,
        kept for the key (and for ``subscription`` when the key is decided by it alone)."""
        by_key = self.by_key
        found = by_key.get_in_period(start, key)
        if found is None:
            found = build(*args)
            by_key.put(key, found)
        if self.by_subscription is not None:
            self.by_subscription.put(subscription, found)
        return found
