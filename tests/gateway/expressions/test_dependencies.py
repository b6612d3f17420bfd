"""What an expression's value depends on: ``CompiledExpression.subscription_only`` (``dependencies.py``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.expressions import compile_expression


@pytest.mark.parametrize(
    "text",
    [
        '@(context.Subscription?.Id ?? "anonymous")',  # the wizard's counter key
        "@(context.Subscription.Id)",
        "@(context.Subscription.Name)",
        '@("tenant-" + context.Subscription?.Name)',
        '@($"{context.Subscription?.Id}-tpm")',
        '@(context.Subscription?.Id != null ? context.Subscription.Id : "none")',
        '@((string)context.Subscription?.Id ?? "x")',
        '@("literal")',
    ],
)
def test_values_of_the_subscription_alone(text: str) -> None:
    assert compile_expression(text).subscription_only


@pytest.mark.parametrize(
    "text",
    [
        "@(context.Subscription.Key)",  # the key the caller presented: two keys, one subscription
        "@(context.Request.IpAddress)",
        "@(context.Subscription?.Id ?? context.Request.IpAddress)",
        "@(context.Subscription?.Id.ToUpper())",  # calls are not looked into
        "@(DateTime.UtcNow.ToString())",
        '@(context.Request.Headers.GetValueOrDefault("x", ""))',
        '@(context.Subscription != null ? "a" : "b")',  # the subscription object itself is not a value here
        "@(context.Api.Id)",
        "@(context.Api.Name)",
        "@(context.Operation.Id)",
        "@(context.Request.Method)",
        "@(context.Subscription.Id + context.Operation.Id)",
        "@(context.User.Id)",
        "@{ return context.Subscription.Id; }",  # blocks (locals, statements) are not looked into
    ],
)
def test_anything_else_is_not(text: str) -> None:
    assert not compile_expression(text).subscription_only


def test_a_subscription_only_expression_reads_nothing_but_the_subscription() -> None:
    """The value is the same for two contexts that share the subscription and differ in everything else."""
    compiled = compile_expression('@(context.Subscription?.Id ?? "anonymous")')
    subscription = SimpleNamespace(name="sub-1")
    first = SimpleNamespace(subscription=subscription, request=None, api=None, variables={"a": 1})
    second = SimpleNamespace(subscription=subscription, request=object(), api=object(), variables={})
    assert compiled.to_str(first) == compiled.to_str(second) == "sub-1"
    assert compiled.to_str(SimpleNamespace(subscription=None)) == "anonymous"
