"""Validation of policy documents: the usage tables (sections, scopes), known-but-unsupported APIM policies, aliases,
nested statements, and policy expressions compiled at load time with errors at their exact line and column."""

from __future__ import annotations

import pytest

from gateway.policy import (
    ALIASES,
    ALL_SCOPES,
    IMPLEMENTED,
    UNSUPPORTED,
    Literal,
    PolicyError,
    Scope,
    Section,
    get_policy_class,
    parse_document,
    policy_names,
    validate_document,
)
from gateway.policy.catalog import MSG_MANAGED_IDENTITY
from gateway.policy.document import policy_class
from gateway.policy.values import Expression

from .helpers import FIXTURES

# the policies APIM allows in on-error (learn.microsoft.com/azure/api-management/api-management-error-handling-policies)
ON_ERROR = {
    "choose", "set-variable", "find-and-replace", "return-response", "set-header", "set-method", "set-status",
    "send-request", "send-one-way-request", "log-to-eventhub", "json-to-xml", "xml-to-json", "limit-concurrency",
    "mock-response", "retry", "trace",
}  # fmt: skip
ALL, IN, BE, ERR = frozenset(Section), Section.INBOUND, Section.BACKEND, Section.ON_ERROR
# where the APIM reference allows each implemented policy (at every scope); the classes declare it, this checks them
APIM_SECTIONS = {
    "base": ALL, "choose": ALL, "set-variable": ALL, "return-response": ALL, "set-status": ALL, "set-header": ALL,
    "set-backend-service": {IN, BE}, "forward-request": {BE}, "set-query-parameter": {IN, BE},
    "rate-limit-by-key": {IN}, "quota-by-key": {IN}, "check-header": {IN},
    "llm-token-limit": {IN}, "azure-openai-token-limit": {IN},
    "llm-content-safety": {IN, Section.OUTBOUND},
    "llm-emit-token-metric": {IN}, "azure-openai-emit-token-metric": {IN},
    "llm-semantic-cache-lookup": {IN}, "azure-openai-semantic-cache-lookup": {IN},
    "llm-semantic-cache-store": {Section.OUTBOUND}, "azure-openai-semantic-cache-store": {Section.OUTBOUND},
}  # fmt: skip


def error_of(text: str, scope: str = "api", fmt: str = "xml") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        validate_document(text, scope, fmt)
    return info.value


def inbound(body: str) -> str:
    return f"<policies><inbound>{body}</inbound></policies>"


#
# The usage tables
#


def test_on_error_admits_exactly_the_documented_policies():
    implemented = {name for name in policy_names() if Section.ON_ERROR in get_policy_class(name).sections}
    unsupported = {name for name, usage in UNSUPPORTED.items() if Section.ON_ERROR in usage.sections}
    assert (implemented | unsupported) - {"base", "include-fragment"} == ON_ERROR


# APIM's scopes where they are not all four (llm-content-safety: the operation scope was dropped in 2025)
APIM_SCOPES = {"llm-content-safety": ALL_SCOPES - {Scope.OPERATION}}


@pytest.mark.parametrize("name", sorted(APIM_SECTIONS))
def test_implemented_policies_declare_the_apim_usage(name):
    cls = get_policy_class(name)
    assert cls.sections == APIM_SECTIONS[name]
    assert cls.scopes == APIM_SCOPES.get(name, ALL_SCOPES)


def test_aliases_are_catalogued():
    known = IMPLEMENTED | UNSUPPORTED.keys()
    assert set(ALIASES) <= known and set(ALIASES.values()) <= known


@pytest.mark.parametrize("name", sorted(set(UNSUPPORTED) - {"authentication-managed-identity"}))
def test_known_but_unimplemented_policies_say_not_supported(name):
    section = next(iter(UNSUPPORTED[name].sections))
    err = error_of(f"<policies>\n  <{section.value}>\n    <{name} />\n  </{section.value}>\n</policies>")
    assert err.message == f"policy <{name}> is not supported by Sluice yet"
    assert (err.line, err.column) == (3, 5)


def test_unknown_policy():
    err = error_of(inbound("\n<set-headr name='x'/>"))
    assert err.message == "unknown policy <set-headr>" and (err.line, err.column) == (2, 1)


def test_managed_identity_is_rejected_with_the_named_value_hint():
    err = error_of((FIXTURES / "managed-identity.xml").read_text())
    assert err.message == MSG_MANAGED_IDENTITY
    assert "cannot work outside Azure" in err.message and "named value" in err.message
    assert (err.line, err.column) == (5, 9)


@pytest.mark.parametrize(
    ("text", "scope", "fragment", "position"),
    [
        ("<policies><outbound>\n<set-query-parameter name='a'/></outbound></policies>", "api",
         "<set-query-parameter> is not allowed in the outbound section (allowed: inbound, backend)", (2, 1)),
        ("<policies><on-error>\n<set-backend-service base-url='http://x'/></on-error></policies>", "api",
         "not allowed in the on-error section", (2, 1)),
        ("<policies><on-error><rate-limit-by-key calls='1' renewal-period='1' counter-key='k'/></on-error></policies>",
         "api", "not allowed in the on-error section (allowed: inbound)", (1, 21)),
        ("<policies><backend>\n<set-backend-service backend-id='a'/>\n<forward-request/></backend></policies>", "api",
         "<backend> may hold only one policy element", (3, 1)),
    ],
)  # fmt: skip
def test_wrong_section_or_scope(text, scope, fragment, position):
    err = error_of(text, scope)
    assert fragment in err.message and (err.line, err.column) == position


def test_aliases_resolve_to_the_llm_policies():
    for alias, target in ALIASES.items():
        cls = policy_class(alias)
        if target in policy_names():
            assert cls is not None and issubclass(cls, get_policy_class(target))


#
# Nested statements (choose)
#


@pytest.mark.parametrize(
    ("body", "fragment", "position"),
    [
        ("<choose/>", "<choose> needs at least one <when>", (1, 20)),
        ("<choose><otherwise/></choose>", "needs at least one <when>", (1, 20)),
        ("<choose><when/></choose>", "<when>: missing required attribute 'condition'", (1, 28)),
        ("<choose><when condition='true'/><otherwise/><when condition='true'/></choose>",
         "<when> must not follow <otherwise>", (1, 64)),
        ("<choose><when condition='true'/><otherwise/><otherwise/></choose>", "must not follow <otherwise>", (1, 64)),
        ("<choose><if condition='true'/></choose>", "<if> is not allowed inside <choose>", (1, 28)),
        ("<choose><when condition='yes'/></choose>", "'condition' must be true, false or a Boolean expression",
         (1, 28)),
        ("<choose><when condition='true' colour='red'/></choose>", "<when>: unknown attribute 'colour'", (1, 28)),
        ("<choose><when condition='true'>text</when></choose>", "<when> must not contain text", (1, 28)),
        ("<choose><when condition='true'>\n<base/></when></choose>", "<base /> may only appear directly", (2, 1)),
        ("<choose><when condition='true'>\n<forward-request/></when></choose>",
         "<forward-request> is not allowed in the inbound section", (2, 1)),
        ("<choose><when condition='true'><choose><when condition='true'>\n<nope/></when></choose></when></choose>",
         "unknown policy <nope>", (2, 1)),
        ("<choose><otherwise>\n<cors/></otherwise></choose>", "policy <cors> is not supported by Sluice yet", (2, 1)),
        ("<choose><when condition='true'>\n<set-header/></when></choose>", "missing required attribute 'name'", (2, 1)),
    ],
)  # fmt: skip
def test_choose_structure_errors(body, fragment, position):
    err = error_of(inbound(body))
    assert fragment in err.message
    assert (err.line, err.column) == position


def test_nested_statements_follow_scope_rules():
    # rate-limit (without -by-key) is not allowed at global scope; nothing nested escapes that
    err = error_of(inbound("<choose><when condition='true'><rate-limit/></when></choose>"), "global")
    assert "not supported by Sluice yet" in err.message  # known name, checked before usage
    doc = parse_document(
        "<policies><on-error><choose><when condition='@(context.LastError.Reason == &quot;Timeout&quot;)'>"
        "<set-status code='504'/></when><otherwise><set-variable name='a' value='b'/></otherwise></choose>"
        "</on-error></policies>",
        "operation",
    )
    choose = doc.sections[Section.ON_ERROR][0]
    assert [s.name for s in choose.substeps()] == ["set-status", "set-variable"]
    assert all(s.section is Section.ON_ERROR and s.scope is Scope.OPERATION for s in choose.substeps())


#
# Expressions
#


def test_expressions_compile_at_load_time():
    doc = parse_document(
        inbound('<set-header name="x"><value>@(context.Request.IpAddress)</value></set-header>'), "api"
    )
    step = doc.sections[Section.INBOUND][0]
    assert isinstance(step.values[0], Expression) and step.entries is None
    assert isinstance(step.header_name, Literal) and step.header == b"x"


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        # in an attribute: the column of the offending character inside the value
        (inbound('\n  <set-variable name="v" value="@(context.Request.Nope)" />'), (2, 51),
         "does not contain a definition"),
        # &quot; counts as one character of the expression but six of the line
        (inbound('\n<set-variable name="v" value="@(&quot;a&quot; + context.Nope)"/>'), (2, 57), "'Nope'"),
        # in element text, over several lines
        (inbound('<set-header name="x"><value>@{\n  var a = 1;\n  return a +;\n}</value></set-header>'), (3, 13),
         "expected an expression"),
        (inbound('<set-header name="x"><value>@(1 +</value></set-header>'), (1, 48), "must have the form"),
        (inbound("<set-variable name='v' value='@(while)'/>"), (1, 52), "'while' is not supported"),
    ],
)  # fmt: skip
def test_expression_compile_errors_point_inside_the_value(text, position, fragment):
    err = error_of(text)
    assert fragment in err.message
    assert (err.line, err.column) == position


def test_positions_inside_cdata_and_after_comments():
    err = error_of(inbound('<set-header name="x"><value><![CDATA[@("<" +)]]></value></set-header>'))
    assert "invalid policy expression" in err.message and (err.line, err.column) == (1, 64)
    err = error_of(inbound('<set-header name="x"><value><!-- c -->@(1 + x)</value></set-header>'))
    assert (err.line, err.column) == (1, 64)  # the "x" after the 10-character comment


def test_expressions_are_refused_where_apim_refuses_them():
    err = error_of(inbound("\n<set-variable name='@(&quot;v&quot;)' value='1'/>"))
    assert err.message == "<set-variable> attribute 'name': policy expressions are not allowed here"
    assert (err.line, err.column) == (2, 21)


def test_no_python_eval_anywhere_in_the_policy_package():
    import pathlib

    import gateway.expressions
    import gateway.policy

    for package in (gateway.policy, gateway.expressions):
        for path in pathlib.Path(package.__file__).parent.rglob("*.py"):
            source = path.read_text()
            assert "eval(" not in source.replace(".evaluate(", "").replace("_eval(", ""), path
            assert "exec(" not in source, path


def test_named_value_references_stay_plain_text():
    validate_document(inbound('<set-header name="api-key"><value>{{openai-key}}</value></set-header>'), "api")
    validate_document(
        inbound('<set-header name="k"><value>@("{{openai-key}}".Length.ToString())</value></set-header>'), "api"
    )
