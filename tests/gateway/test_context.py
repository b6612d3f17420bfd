"""gateway.context: RequestContext's written-out __init__ stays in step with its declared fields."""

from __future__ import annotations

import dataclasses
import inspect

from gateway.context import RequestContext


def test_init_takes_every_field_in_order_with_its_default():
    fields = dataclasses.fields(RequestContext)
    parameters = list(inspect.signature(RequestContext.__init__).parameters.values())[1:]  # without self
    assert [p.name for p in parameters] == [f.name for f in fields]
    for field, parameter in zip(fields, parameters, strict=True):
        if field.default is not dataclasses.MISSING:
            assert parameter.default == field.default, field.name
        elif field.default_factory is not dataclasses.MISSING:
            assert parameter.default is None, field.name  # None stands for a new container
        else:
            assert parameter.default is inspect.Parameter.empty, field.name


def test_init_gives_each_context_containers_of_its_own():
    args = [object()] * 12  # the twelve fields without a default
    first, second = RequestContext(*args), RequestContext(*args)
    for field in dataclasses.fields(RequestContext):
        if field.default_factory is not dataclasses.MISSING:
            mine, theirs = getattr(first, field.name), getattr(second, field.name)
            assert mine == field.default_factory(), field.name
            assert mine is not theirs, field.name
    assert [getattr(first, f.name) for f in dataclasses.fields(RequestContext)[:12]] == args
