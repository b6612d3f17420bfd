"""The registry is built from BUILTINS, the one list of built-in policies, and that list agrees with the catalog:
a policy left out of it is a failing test here, and a document using it is refused as "not supported"."""

from __future__ import annotations

import pytest

from gateway.policy import (
    BUILTINS,
    IMPLEMENTED,
    REGISTRY,
    UNSUPPORTED,
    Policy,
    PolicyError,
    Registry,
    Section,
    parse_document,
)
from gateway.policy.builtin.set_header import SetHeader
from gateway.policy.catalog import MSG_NOT_SUPPORTED
from gateway.policy.registry import get_policy_class, policy_names

from .helpers import usage_document


def test_every_implemented_catalog_entry_has_exactly_one_builtin_class():
    for name in IMPLEMENTED:
        assert [cls for cls in BUILTINS if cls.name == name] != [], f"{name} is in the catalog but not in BUILTINS"
    assert sorted(cls.name for cls in BUILTINS) == sorted(IMPLEMENTED)  # and no name twice


def test_every_builtin_class_is_marked_implemented_in_the_catalog():
    assert [cls.__name__ for cls in BUILTINS if cls.name not in IMPLEMENTED] == []


def test_an_implemented_policy_has_no_second_usage_entry_in_the_catalog():
    assert sorted(IMPLEMENTED & UNSUPPORTED.keys()) == []


def test_the_gateway_compiles_against_the_registry_of_builtins():
    assert REGISTRY.names() == tuple(sorted(IMPLEMENTED)) == policy_names()
    assert set(REGISTRY.classes()) == set(BUILTINS)
    assert get_policy_class("set-header") is SetHeader
    with pytest.raises(LookupError):
        get_policy_class("nope")


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda cls: cls.name)
def test_every_builtin_compiles_from_its_usage_document(cls):
    document = parse_document(usage_document(cls), "api")
    assert [type(step) for steps in document.sections.values() for step in steps] == [cls]


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda cls: cls.name)
def test_a_policy_left_out_of_the_list_is_refused_as_not_supported(cls):
    without = Registry([other for other in BUILTINS if other is not cls])
    text = usage_document(cls)
    parse_document(text, "api")  # the full registry takes it
    with pytest.raises(PolicyError) as info:
        parse_document(text, "api", registry=without)
    assert info.value.message == MSG_NOT_SUPPORTED.replace("{name}", cls.name)
    assert info.value.line == 3


def test_two_classes_with_one_name_are_refused():
    class Duplicate(Policy):
        name = "set-header"
        sections = frozenset({Section.INBOUND})

    with pytest.raises(ValueError, match="'set-header' is registered twice: by SetHeader and Duplicate"):
        Registry([*BUILTINS, Duplicate])


def test_incomplete_declarations_are_refused():
    class Nameless(Policy):
        sections = frozenset({Section.INBOUND})

    class Sectionless(Policy):
        name = "sectionless-test-policy"

    class Scopeless(Policy):
        name = "scopeless-test-policy"
        sections = frozenset({Section.INBOUND})
        scopes = frozenset()

    with pytest.raises(TypeError, match="Nameless has no policy name"):
        Registry([Nameless])
    with pytest.raises(TypeError, match="'sectionless-test-policy' declares no sections"):
        Registry([Sectionless])
    with pytest.raises(TypeError, match="'scopeless-test-policy' declares no scopes"):
        Registry([Scopeless])
