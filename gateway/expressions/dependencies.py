"""What a compiled expression's value depends on, found from its syntax tree.

``subscription_only(parsed)`` is true when the value of an ``@( expression )`` is determined by the request's
subscription alone (``context.Subscription`` and its ``Id`` / ``Name``), with literals and the operators around them:
two requests of the same subscription get the same value, or the same error. A policy may then remember the value
per subscription instead of evaluating the expression per request (``llm-token-limit``'s counter key). Anything
else (another member of ``context``, ``context.Subscription.Key``, which is the key the caller presented, a method
or indexer call, a lambda, a ``@{ ... }`` block with its locals) makes it false: a conservative answer.
"""

from __future__ import annotations

from typing import Final

from . import nodes as n
from .parser import Parsed

__all__ = ("subscription_only",)

# The members of ISubscription that read the subscription itself (``SubscriptionEntry.name``)
_SUBSCRIPTION_MEMBERS: Final = frozenset({"Id", "Name"})
# What a node's value is, for this analysis: the ISubscription object, a value decided by it, or neither (None)
_SUBSCRIPTION: Final = "subscription"
_VALUE: Final = "value"


def subscription_only(parsed: Parsed) -> bool:
    """Whether the expression's value is a function of the request's subscription alone (see the module)."""
    if parsed.form != "expr":
        return False
    assert not isinstance(parsed.body, n.Block)
    return _kind(parsed.body, []) == _VALUE


def _kind(node: n.Node, receivers: list[str | None]) -> str | None:
    """``_SUBSCRIPTION``, ``_VALUE`` or None for ``node``; ``receivers`` are the kinds of the ``?.`` targets being
    accessed, innermost last."""
    if isinstance(node, n.Literal):
        return _VALUE
    if isinstance(node, n.Receiver):
        return receivers[-1] if receivers else None
    if isinstance(node, n.Member):
        if isinstance(node.target, n.Name):  # in the expression form, the only name with members here is context
            return _SUBSCRIPTION if node.target.name == "context" and node.name == "Subscription" else None
        if node.name in _SUBSCRIPTION_MEMBERS and _kind(node.target, receivers) == _SUBSCRIPTION:
            return _VALUE
        return None
    if isinstance(node, n.CondAccess):
        receivers.append(_kind(node.target, receivers))
        try:
            return _kind(node.chain, receivers)
        finally:
            receivers.pop()
    if isinstance(node, n.Unary):
        return _values(receivers, node.operand)
    if isinstance(node, n.Binary):
        return _values(receivers, node.left, node.right)
    if isinstance(node, n.Conditional):
        return _values(receivers, node.condition, node.then, node.otherwise)
    if isinstance(node, n.Cast):
        return _values(receivers, node.operand)
    if isinstance(node, n.Interpolated):
        holes = [part for part in node.parts if not isinstance(part, str)]
        return _values(receivers, *(hole[0] for hole in holes), *(hole[1] for hole in holes if hole[1] is not None))
    return None  # a name alone, a call, an indexer, a lambda


def _values(receivers: list[str | None], *nodes: n.Node) -> str | None:
    """``_VALUE`` when every node is a value decided by the subscription (operators compute from their operands)."""
    return _VALUE if all(_kind(node, receivers) == _VALUE for node in nodes) else None
